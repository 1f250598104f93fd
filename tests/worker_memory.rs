//! `--worker-max-memory`: a worker that grows past the limit is replaced without a failed
//! request in a client loop, its slot's new copy up before it gets its signal, and the
//! replacement is counted in `status` and the metrics.

mod common;

use common::*;

/// The HTTP worker, one of whose copies (the first to take the file $GROW) grows by 200 MiB a
/// second after it starts.
const GROWING_WORKER: &str = r#"#!/usr/bin/env python3
import os, runpy, sys, threading
held = []
def grow():
    held.append(b"x" * (200 << 20))
    print("worker %d grew" % os.getpid(), file=sys.stderr, flush=True)
try:
    os.rename(os.environ["GROW"], os.environ["GROW"] + ".taken")
    threading.Timer(1, grow).start()
except OSError:
    pass
runpy.run_path(os.environ["HTTP_WORKER"], run_name="__main__")
"#;

#[test]
fn a_worker_past_the_limit_is_replaced_without_a_failed_request() {
    let tmp = TempDir::new();
    let (addr, port) = port_options();
    let grow = tmp.path("grow");
    std::fs::write(&grow, "").unwrap();
    let http = tmp.script("worker.py", HTTP_WORKER);
    let worker = tmp.script("growing.py", GROWING_WORKER);
    let server = tmp.start_server(
        &[
            &port[0],
            &tmp.arg("--control", "control"),
            "--workers=2",
            "--worker-max-memory=100M",
        ],
        &[&worker.display().to_string()],
        &[
            ("SEND_READY", "1".into()),
            ("GROW", grow.display().to_string()),
            ("HTTP_WORKER", http.display().to_string()),
        ],
    );
    served_by(&addr);
    let traffic = Traffic::start(&addr);
    let log = server.wait_log("grew");
    let grown: i32 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("worker ")?
                .strip_suffix(" grew")?
                .parse()
                .ok()
        })
        .expect("the worker that grew");
    let log = server.wait_log(&format!("replaced worker {grown} in slot"));
    let replaced = server.wait_log(&format!("old worker {grown} died"));
    let (served, failed) = traffic.finish();
    assert_eq!(
        failed,
        0,
        "{failed} failed requests of {}:\n{log}",
        served + failed
    );
    assert!(served > 0);

    // In order: the limit passed, the new copy started and up, then the old one signalled.
    let line = |needle: &str| {
        replaced
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{replaced}"))
    };
    let over = line("above --worker-max-memory (100.0 MiB): starting its replacement");
    assert!(
        replaced
            .lines()
            .nth(over)
            .unwrap()
            .starts_with(&format!("worker {grown} in slot")),
        "{replaced}"
    );
    let (slot, new): (usize, i32) = {
        let text = replaced
            .lines()
            .skip(over)
            .find(|l| l.contains(&format!("replaced worker {grown}")))
            .unwrap();
        let mut words = text.split_whitespace();
        let new = words.nth(1).unwrap().parse().unwrap();
        let slot = text
            .split("in slot ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (slot, new)
    };
    let ready = line(&format!("worker {new} in slot {slot} is ready"));
    let started = line(&format!("starting worker {new} in slot {slot}"));
    let signalled = line(&format!(
        "replaced worker {grown} in slot {slot}, sending TERM"
    ));
    assert!(
        over < started && started < ready && ready < signalled,
        "{replaced}"
    );

    let status = status_json(&tmp.path("control"));
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{status}");
    let recycled = workers.iter().find(|w| w["slot"] == slot).unwrap();
    assert_eq!(recycled["pid"], new, "{status}");
    assert_eq!(recycled["memory_recycles"], 1, "{status}");
    let text = std::process::Command::new(bin())
        .arg("--metrics")
        .arg(tmp.arg("--control", "control"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("\nserver_starter_worker_memory_recycles_total 1\n"),
        "{text}"
    );
}
