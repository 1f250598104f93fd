//! Operator options: the shutdown delay, the worker watchdog, under real signals and workers.

mod common;

use common::*;

fn http_server(tmp: &TempDir, port: u16, extra: &[&str]) -> Server {
    let worker = tmp.http_worker();
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--status-file", "status"),
        "--interval=0.3".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(worker.display().to_string());
    Server::start(
        &a,
        &[("SIGNAL_LOG", tmp.path("signals").display().to_string())],
    )
}

#[test]
fn shutdown_delay_serves_until_a_second_term() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Far longer than the test's patience: only the second TERM can end it in time.
    let mut server = http_server(&tmp, port, &["--shutdown-delay=3600"]);
    let (pid, _) = served_by(&addr);
    server.signal(libc::SIGTERM);
    server.wait_log("received TERM, serving 3600 secs more before stopping the workers");
    for _ in 0..3 {
        assert_eq!(served_by(&addr).0, pid, "still served during the delay");
    }
    assert!(
        !tmp.path("signals").exists(),
        "the worker got no signal yet"
    );
    server.signal(libc::SIGTERM);
    server.wait_log("received TERM again, stopping the workers now");
    assert!(server.wait_exit().success());
    let signals = std::fs::read_to_string(tmp.path("signals")).unwrap();
    assert_eq!(signals, format!("{pid} SIGTERM\n"));
}

#[test]
fn shutdown_delay_ends_by_itself() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = http_server(&tmp, port, &["--shutdown-delay=0.5"]);
    served_by(&format!("127.0.0.1:{port}"));
    server.signal(libc::SIGINT);
    server.wait_log("shutdown delay over");
    assert!(server.wait_exit().success());
}

/// A worker that writes its pid, WATCHDOG_USEC and WATCHDOG_PID to $REPORT (one a line), then sends `WATCHDOG=1` $PETS times, 0.2 s
/// apart, appending a line to $REPORT.pets for each, then goes silent (TERM ends it).
const PETTING_WORKER: &str = r#"#!/usr/bin/env python3
import os, signal, socket, time
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
report = os.environ["REPORT"]
with open(report + ".tmp", "w") as f:
    f.write("%d\n%s\n%s\n" % (os.getpid(), os.environ.get("WATCHDOG_USEC"),
                               os.environ.get("WATCHDOG_PID")))
os.rename(report + ".tmp", report)
target = os.environ["NOTIFY_SOCKET"]
if target.startswith("@"):
    target = "\0" + target[1:]
note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for _ in range(int(os.environ["PETS"])):
    note.sendto(b"WATCHDOG=1", target)
    with open(report + ".pets", "a") as f:
        f.write("pet\n")
    time.sleep(0.2)
while True:
    time.sleep(3600)
"#;

/// The lines of a report, once complete.
fn report(path: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

#[test]
fn worker_watchdog_replaces_a_worker_that_goes_silent() {
    let tmp = TempDir::new();
    let worker = tmp.script("petting.py", PETTING_WORKER);
    let report_path = tmp.path("report");
    let server = tmp.start_server(
        &["--interval=0.1", "--worker-watchdog=1"],
        &[&worker.display().to_string()],
        &[
            ("REPORT", report_path.display().to_string()),
            ("PETS", "10".into()),
        ],
    );
    let first = wait_until("the first worker's report", || report(&report_path));
    let pid: i32 = first[0].parse().unwrap();
    assert_eq!(first[1..], ["1000000".to_string(), pid.to_string()]);
    // Ten pets take 2 s, twice the watchdog: the worker is left alone meanwhile.
    wait_until("ten pets", || {
        let pets = std::fs::read_to_string(tmp.path("report.pets")).ok()?;
        (pets.lines().count() >= 10).then_some(())
    });
    assert!(!server.log().contains("WATCHDOG=1 for"), "{}", server.log());
    assert!(alive(pid));
    // Then it goes silent: TERM, and a new worker in its place.
    server.wait_log(&format!(
        "worker {pid} sent no WATCHDOG=1 for 1 sec, sending TERM"
    ));
    let (generation, replacement) = wait_sole_generation(&tmp.path("status"), 2);
    assert_ne!(replacement, pid);
    assert!(generation >= 2);
    assert!(!alive(pid));
}

/// A worker that writes "PID GENERATION" to $SLOTS/slot-$SERVER_STARTER_WORKER, then sleeps
/// (as that same process) until signalled.
const SLOT_WORKER: &str = "#!/bin/sh\n\
    f=\"$SLOTS/slot-$SERVER_STARTER_WORKER\"\n\
    echo \"$$ $SERVER_STARTER_GENERATION\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n\
    exec sleep 1000\n";

/// The (pid, generation) that slot `slot`'s last worker wrote.
fn slot(tmp: &TempDir, slot: usize) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(tmp.path(&format!("slot-{slot}"))).ok()?;
    let (pid, generation) = text.trim().split_once(' ')?;
    Some((pid.parse().ok()?, generation.parse().ok()?))
}

fn slot_server(tmp: &TempDir, extra: &[&str]) -> Server {
    let worker = tmp.script("slot.sh", SLOT_WORKER);
    let mut options = vec!["--interval=0.2"];
    options.extend(extra);
    tmp.start_server(
        &options,
        &[&worker.display().to_string()],
        &[("SLOTS", tmp.0.display().to_string())],
    )
}

/// Waits until every slot below `n` holds a live worker of `generation`; their pids.
fn wait_slots(tmp: &TempDir, n: usize, generation: u64) -> Vec<i32> {
    wait_until(&format!("{n} workers of generation {generation}"), || {
        (0..n)
            .map(|s| {
                slot(tmp, s)
                    .filter(|&(p, g)| g == generation && alive(p))
                    .map(|(p, _)| p)
            })
            .collect()
    })
}

#[test]
fn workers_run_n_copies_each_told_its_slot() {
    let tmp = TempDir::new();
    let server = slot_server(&tmp, &["--workers=3"]);
    let pids = wait_slots(&tmp, 3, 1);
    server.wait_log("new worker is now running");
    assert_eq!(wait_sole_generation(&tmp.path("status"), 1), (1, pids[0]));
    assert!(slot(&tmp, 3).is_none(), "no fourth copy");
    assert_eq!(server.log().matches("new worker is now running").count(), 1);
}

#[test]
fn a_copy_that_dies_is_replaced_alone_in_its_slot() {
    let tmp = TempDir::new();
    let server = slot_server(&tmp, &["--workers=3"]);
    let pids = wait_slots(&tmp, 3, 1);
    server.wait_log("new worker is now running");
    // SAFETY: kill(2) on a worker of our test server.
    unsafe { libc::kill(pids[1], libc::SIGKILL) };
    let replacement = wait_until("slot 1 replaced", || {
        slot(&tmp, 1).filter(|&(p, _)| p != pids[1] && alive(p))
    });
    assert_eq!(replacement.1, 1, "in the same generation");
    assert!(alive(pids[0]) && alive(pids[2]), "the others keep serving");
    assert_eq!(slot(&tmp, 0), Some((pids[0], 1)));
    assert_eq!(slot(&tmp, 2), Some((pids[2], 1)));
    server.wait_log(&format!("worker {} in slot 1 died unexpectedly", pids[1]));
    assert_eq!(status_entries(&tmp.path("status")), vec![(1, pids[0])]);
}

#[test]
fn a_reload_replaces_every_copy() {
    let tmp = TempDir::new();
    let server = slot_server(&tmp, &["--workers=2"]);
    let old = wait_slots(&tmp, 2, 1);
    server.wait_log("new worker is now running");
    server.signal(libc::SIGHUP);
    let new = wait_slots(&tmp, 2, 2);
    wait_until("the old copies to exit", || {
        old.iter().all(|&p| !alive(p)).then_some(())
    });
    assert!(new.iter().all(|&p| alive(p)));
    assert_eq!(wait_sole_generation(&tmp.path("status"), 2), (2, new[0]));
}

/// start_server's children, from /proc.
fn children(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| text.split_whitespace().count())
        .unwrap_or(0)
}

#[test]
fn a_rolling_reload_never_has_more_than_n_plus_m_workers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let tmp = TempDir::new();
    let server = slot_server(&tmp, &["--workers=3", "--max-extra=1"]);
    let old = wait_slots(&tmp, 3, 1);
    server.wait_log("new worker is now running");
    let (done, most) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let sampler = {
        let (done, most, pid) = (Arc::clone(&done), Arc::clone(&most), server.pid());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(children(pid), Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    server.signal(libc::SIGHUP);
    let new = wait_slots(&tmp, 3, 2);
    wait_until("the old workers to exit", || {
        old.iter().all(|&p| !alive(p)).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let most = most.load(Ordering::SeqCst);
    assert!((3..=4).contains(&most), "{most} workers alive at once");
    assert!(new.iter().all(|&p| alive(p)));
    let log = server.log();
    let first = log.find("rolling reload: slot 1 replaced").expect(&log);
    let second = log.find("rolling reload: slot 2 replaced").expect(&log);
    assert!(first < second, "one slot after the other:\n{log}");
    assert_eq!(wait_sole_generation(&tmp.path("status"), 2), (2, new[0]));
}

#[test]
fn slot_zero_that_dies_is_replaced_alone_too() {
    let tmp = TempDir::new();
    let server = slot_server(&tmp, &["--workers=2"]);
    let pids = wait_slots(&tmp, 2, 1);
    server.wait_log("new worker is now running");
    // SAFETY: kill(2) on a worker of our test server.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let (replacement, generation) = wait_until("slot 0 replaced", || {
        slot(&tmp, 0).filter(|&(p, _)| p != pids[0] && alive(p))
    });
    assert_eq!(generation, 1, "no new generation");
    assert!(alive(pids[1]), "slot 1 keeps serving");
    assert_eq!(
        wait_sole_generation(&tmp.path("status"), 1),
        (1, replacement)
    );
}
