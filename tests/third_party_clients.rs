//! Real clients of both socket conventions behind start_server: Perl's
//! `Server::Starter::server_ports`, Starlet (PSGI), a Python program written for systemd socket
//! activation, and a Rust one using the `listenfd` crate. `.ci/run` installs the Perl ones
//! (libserver-starter-perl, starlet, libplack-perl).

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

/// Serves `worker` behind start_server on a fresh port and checks it answers across three
/// reloads with a new generation each time and no failed request meanwhile.
fn serves_through_reloads(tmp: &TempDir, worker: &[String], extra: &[&str]) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--status-file", "status"),
        "--interval=0.5".to_string(),
    ];
    a.extend(args(extra));
    a.push("--".into());
    a.extend(worker.iter().cloned());
    let server = Server::start(&a, &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(served_by(&addr).1, 1, "{}", server.log());
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut served = 0;
            while !stop.load(Ordering::SeqCst) {
                match http_get(&addr) {
                    Ok(_) => served += 1,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (served, failures)
        })
    };
    for generation in 2..=4 {
        server.signal(libc::SIGHUP);
        wait_sole_generation(&tmp.path("status"), generation);
        wait_until(&format!("generation {generation} to answer"), || {
            (served_by(&addr).1 == generation).then_some(())
        });
    }
    stop.store(true, Ordering::SeqCst);
    let (served, failures) = client.join().expect("client thread");
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?}\n{}",
        server.log()
    );
    assert!(served > 0);
}

#[test]
fn perl_server_ports_reads_our_variable() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    let out = tmp.path("ports");
    let worker = tmp.script(
        "ports.pl",
        r#"#!/usr/bin/perl
use Server::Starter qw(server_ports);
my $ports = server_ports();
open my $fh, '>', "$ENV{OUT}.tmp" or die;
print $fh join(";", map { "$_=$ports->{$_}" } sort keys %$ports), "\n";
close $fh;
rename "$ENV{OUT}.tmp", $ENV{OUT};
sleep 600;
"#,
    );
    let sock = tmp.path("s.sock");
    let _server = Server::start(
        &args(&[
            &format!("--port={p1}"),
            &format!("--port=[::1]:{p2}=7"),
            &format!("--path={}", sock.display()),
            "--",
            &worker.display().to_string(),
        ]),
        &[("OUT", out.display().to_string())],
    );
    let seen = wait_until("the Perl worker's answer", || fs::read_to_string(&out).ok());
    let mut expected = [
        format!("{p1}=3"),
        format!("[::1]:{p2}=7"),
        format!("{}=4", sock.display()),
    ];
    expected.sort();
    assert_eq!(seen.trim_end(), expected.join(";"));
}

#[test]
fn starlet_serves_through_reloads() {
    let tmp = TempDir::new();
    let worker = starlet(&tmp.psgi_app());
    serves_through_reloads(&tmp, &worker, &[]);
}

#[test]
fn a_python_systemd_style_worker_checks_listen_pid_and_serves() {
    let tmp = TempDir::new();
    let worker = tmp.script("sd_worker.py", SYSTEMD_STYLE_WORKER);
    // The port is only known inside serves_through_reloads: pass it through a wrapper.
    let wrapper = tmp.script(
        "wrapper.sh",
        &format!(
            "#!/bin/sh\nPORT=$(echo \"$SERVER_STARTER_PORT\" | sed 's/^127.0.0.1:\\([0-9]*\\)=.*/\\1/') exec {}\n",
            worker.display()
        ),
    );
    // exec keeps the pid, so LISTEN_PID still names the Python process.
    serves_through_reloads(&tmp, &[wrapper.display().to_string()], &[]);
}

fn example(name: &str) -> PathBuf {
    // Integration tests run from target/<profile>/deps; cargo builds examples next door.
    let exe = std::env::current_exe().expect("test executable path");
    let profile = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds it",
        path.display()
    );
    path
}

#[test]
fn a_rust_listenfd_worker_serves_through_reloads() {
    let tmp = TempDir::new();
    let worker = example("listenfd_worker");
    serves_through_reloads(&tmp, &[worker.display().to_string()], &[]);
}

#[test]
fn the_hello_worker_example_serves_through_reloads() {
    let tmp = TempDir::new();
    let worker = example("hello_worker");
    let port = free_port();
    let server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--status-file", "status"),
            "--interval=0.3",
            "--",
            &worker.display().to_string(),
        ]),
        &[],
    );
    let addr = format!("127.0.0.1:{port}");
    let first = wait_until("hello", || http_get(&addr).ok());
    assert!(first.contains("generation 1"), "{first}");
    wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    let second = http_get(&addr).unwrap();
    assert!(second.contains("generation 2"), "{second}");
}
