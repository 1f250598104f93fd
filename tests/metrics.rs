//! Metrics, from the real start_server: `start_server --metrics` prints what `promtool check
//! metrics` (Debian's `prometheus` package) passes; a real Prometheus server scrapes
//! `--metrics-listen`, sees the target up and the reloads counted; the counts are the same after
//! an upgrade in place (and Prometheus goes on scraping the socket it handed over); the endpoint
//! answers over a unix socket and refuses what is not `GET /metrics`; the README's scrape
//! configuration and alert rules pass `promtool check config`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use common::*;

/// `start_server --metrics OPTION`: the text.
fn metrics(option: &str) -> String {
    let out = Command::new(bin())
        .arg("--metrics")
        .arg(option)
        .output()
        .expect("run start_server --metrics");
    assert!(
        out.status.success(),
        "--metrics failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the metrics are UTF-8")
}

/// The samples of a metrics text, by name and labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `promtool check metrics` on `text`: exit 0 and nothing said (no error, no lint problem).
fn promtool_passes(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): apt-get install prometheus"));
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool: {:?} {said}\n{text}",
        output.status
    );
}

/// A client command against the start_server of pid file `pid`; whether it succeeded.
fn client(command: &str, pid: &str) -> bool {
    Command::new(bin())
        .arg(command)
        .arg(pid)
        .output()
        .expect("run the client")
        .status
        .success()
}

#[test]
fn prometheus_scrapes_the_counts_which_an_upgrade_in_place_keeps() {
    let tmp = TempDir::new();
    let (addr, port) = port_options();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let pid = tmp.arg("--pid-file", "pid");
    // Fails once, when `fail` exists (it is removed): the reload fails, the retry that follows
    // comes up.
    let fail = tmp.path("fail");
    let worker = tmp.script(
        "fails_once.sh",
        &format!(
            "#!/bin/sh\nrm {} 2>/dev/null && exit 3\nexec {}\n",
            fail.display(),
            tmp.http_worker().display()
        ),
    );
    let worker = worker.display().to_string();
    let server = tmp.start_server(
        &[
            &port[0],
            &pid,
            &format!("--metrics-listen={metrics_addr}"),
            "--interval=0.2",
        ],
        &[&worker],
        &[("SEND_READY", "1".into())],
    );
    served_by(&addr);
    let prometheus = Prometheus::scraping(&metrics_addr);
    prometheus.wait_up();
    prometheus.wait_for_value("up{job=\"server_starter\"}", "1");
    assert!(client("--reload", &pid), "the reload failed");
    std::fs::write(&fail, "").unwrap();
    assert!(!client("--reload", &pid), "a reload that fails says so");
    wait_sole_generation(&tmp.path("status"), 4);
    prometheus.wait_for_value("server_starter_reloads_total{result=\"ok\"}", "1");
    prometheus.wait_for_value("server_starter_reloads_total{result=\"failed\"}", "1");
    prometheus.wait_for_value("server_starter_generation", "4");
    prometheus.wait_for_value("server_starter_reload_duration_seconds_count", "1");

    let before = metrics(&pid);
    promtool_passes(&before);
    let counted = samples(&before);
    assert_eq!(
        counted["server_starter_worker_starts_total"], 4.0,
        "{before}"
    );
    assert_eq!(
        counted["server_starter_worker_exits_total{reason=\"retired\"}"],
        2.0
    );
    assert_eq!(
        counted["server_starter_worker_exits_total{reason=\"failed_start\"}"],
        1.0
    );
    assert_eq!(
        counted["server_starter_generation_processes{generation=\"4\"}"],
        1.0
    );

    assert!(client("--upgrade", &pid), "the upgrade failed");
    server.wait_log("upgraded from");
    let after = samples(&metrics(&pid));
    let counts = |s: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        s.iter()
            .filter(|(name, _)| {
                (name.contains("_total") || name.contains("_duration_seconds"))
                    && !name.starts_with("server_starter_upgrades_total")
                    && !name.starts_with("server_starter_generation_cpu")
            })
            .map(|(name, value)| (name.clone(), *value))
            .collect()
    };
    assert_eq!(counts(&after), counts(&counted), "the counts changed");
    assert_eq!(after["server_starter_upgrades_total{result=\"ok\"}"], 1.0);
    // Scraped through the socket the first program handed over.
    prometheus.wait_for_value("server_starter_upgrades_total{result=\"ok\"}", "1");
    prometheus.wait_for_value("up{job=\"server_starter\"}", "1");
}

/// One request to the unix socket at `path`; the whole answer.
fn ask(path: &std::path::Path, request: &[u8]) -> String {
    let mut stream = wait_until("the metrics socket", || UnixStream::connect(path).ok());
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn metrics_over_a_unix_socket_and_nothing_else() {
    let tmp = TempDir::new();
    let path = tmp.path("metrics.sock");
    let worker = tmp.http_worker().display().to_string();
    let mut server = tmp.start_server(
        &[
            &port_options().1[0],
            &format!("--metrics-listen={}", path.display()),
        ],
        &[&worker],
        &[],
    );
    let answer = ask(&path, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(body.contains("\nserver_starter_generation "), "{body}");
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (b"\x00\xff garbage\r\n\r\n", "400 Bad Request"),
    ] {
        let answer = ask(&path, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?}: {answer}"
        );
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    assert!(!path.exists(), "the socket file is removed at exit");
}

/// The scrape configuration and the alert rules of README.md's *Metrics*, as written there,
/// pass `promtool check config` (which checks the rule file it names too).
#[test]
fn the_readmes_scrape_configuration_and_rules_pass_promtool() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker =
        "<!-- tests/metrics.rs checks this configuration and the rules below with promtool -->";
    let (_, after) = readme.split_once(marker).expect("README.md has the marker");
    let blocks: Vec<String> = after
        .split("```yaml\n")
        .skip(1)
        .take(2)
        .map(|b| b.split("```").next().unwrap().to_string())
        .collect();
    assert_eq!(blocks.len(), 2, "two yaml blocks after the marker");
    let tmp = TempDir::new();
    std::fs::write(tmp.path("prometheus.yml"), &blocks[0]).unwrap();
    std::fs::write(tmp.path("server_starter_rules.yml"), &blocks[1]).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(tmp.path("prometheus.yml"))
        .output()
        .expect("promtool (apt-get install prometheus)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS: 2 rules found"), "{said}");
}
