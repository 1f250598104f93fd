//! The same scenarios under Perl's Server::Starter (`/usr/bin/start_server` from Debian's
//! libserver-starter-perl, installed by `.ci/run`) and under ours, compared.

mod common;

use std::fs;
use std::process::Command;

use common::*;

const PERL_START_SERVER: &str = "/usr/bin/start_server";

fn perl_available() {
    assert!(
        fs::metadata(PERL_START_SERVER).is_ok(),
        "{PERL_START_SERVER} is missing: install libserver-starter-perl (.ci/run does)"
    );
}

/// Runs `binary` with the report worker and returns SERVER_STARTER_PORT's keys and the
/// generation the worker saw.
fn keys_under(binary: &str, tmp: &TempDir, options: &[String]) -> (Vec<String>, String) {
    let worker = tmp.report_worker();
    let report = tmp.path(&format!("report-{}", binary.replace('/', "_")));
    let mut command = Command::new(binary);
    command.args(options).arg("--").arg(&worker);
    let _server = Server::spawn(command, &[("REPORT", report.display().to_string())]);
    let text = wait_until("the worker's report", || fs::read_to_string(&report).ok());
    let field = |name: &str| {
        let needle = format!("\"{name}\": \"");
        let at = text.find(&needle).expect(name) + needle.len();
        text[at..at + text[at..].find('"').expect("end")].to_string()
    };
    let keys = field("SERVER_STARTER_PORT")
        .split(';')
        .map(|e| e.split_once('=').expect("KEY=FD").0.to_string())
        .collect();
    (keys, field("SERVER_STARTER_GENERATION"))
}

#[test]
fn socket_keys_match_the_original() {
    perl_available();
    let tmp = TempDir::new();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let options = |suffix: &str| {
        vec![
            format!("--port={}", ports[0]),
            format!("--port=127.0.0.1:{}", ports[1]),
            format!("--port=[::1]:{}", ports[2]),
            format!("--port=localhost:{}", ports[3]),
            format!("--port=u{}", ports[4]),
            format!("--path={}", tmp.path(&format!("s{suffix}.sock")).display()),
        ]
    };
    // One after the other: both bind the same ports.
    let (perl, perl_gen) = keys_under(PERL_START_SERVER, &tmp, &options(""));
    wait_until("the Perl server to release its ports", || {
        std::net::TcpListener::bind(("127.0.0.1", ports[1])).ok()
    });
    let (ours, our_gen) = keys_under(bin(), &tmp, &options(""));
    assert_eq!(ours, perl);
    assert_eq!(our_gen, perl_gen);
}

/// Log lines with every number replaced by N, so runs can be compared.
fn normalized(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.starts_with("pid="))
        .map(|l| {
            let mut out = String::new();
            let mut in_number = false;
            for c in l.chars() {
                if c.is_ascii_digit() {
                    if !in_number {
                        out.push('N');
                    }
                    in_number = true;
                } else {
                    in_number = false;
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

fn restart_scenario(binary: &str, tmp: &TempDir, name: &str) -> Vec<String> {
    let port = free_port();
    let status = tmp.path(&format!("{name}.status"));
    let mut command = Command::new(binary);
    command.args([
        format!("--port=127.0.0.1:{port}"),
        format!("--status-file={}", status.display()),
        "--interval=1".into(),
        "--".into(),
        tmp.http_worker().display().to_string(),
    ]);
    let mut server = Server::spawn(command, &[]);
    wait_sole_generation(&status, 1);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&status, 2);
    server.signal(libc::SIGTERM);
    assert_eq!(
        server.wait_exit().code(),
        Some(0),
        "{binary}: {}",
        server.log()
    );
    normalized(&server.log())
}

#[test]
fn every_event_the_original_logs_is_logged_in_the_same_order() {
    perl_available();
    let tmp = TempDir::new();
    let perl = restart_scenario(PERL_START_SERVER, &tmp, "perl");
    let ours = restart_scenario(bin(), &tmp, "ours");
    assert!(perl.len() >= 8, "the Perl run logged its events: {perl:#?}");
    // Ours may say more (and explain statuses), never less: each of Perl's lines must start one
    // of ours, in order.
    let mut rest = ours.iter();
    for line in &perl {
        assert!(
            rest.any(|o| o.starts_with(line.as_str())),
            "{line:?} missing or out of order in ours:\n{ours:#?}\nPerl's:\n{perl:#?}"
        );
    }
}
