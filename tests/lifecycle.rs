//! The process model: start, HUP restart, respawn, failed starts, shutdown, under real signals.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;

fn http_server(tmp: &TempDir, port: u16, extra: &[&str]) -> Server {
    let worker = tmp.http_worker();
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--status-file", "status"),
        tmp.arg("--pid-file", "pid"),
        "--interval=0.3".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(worker.display().to_string());
    Server::start(
        &a,
        &[
            ("SIGNAL_LOG", tmp.path("signals").display().to_string()),
            ("FAIL_IF_EXISTS", tmp.path("fail").display().to_string()),
        ],
    )
}

#[test]
fn serves_and_replaces_the_worker_on_hup() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = http_server(&tmp, port, &[]);
    let (pid1, gen1) = served_by(&addr);
    assert_eq!(gen1, 1);
    assert_eq!(wait_sole_generation(&tmp.path("status"), 1), (1, pid1));
    let log = server.wait_log("new worker is now running, sending TERM to old workers:none");
    assert!(log.contains(&format!(
        "start_server (pid:{}) starting now...",
        server.pid()
    )));
    assert!(log.contains(&format!("starting new worker {pid1}")));

    server.signal(libc::SIGHUP);
    let (gen2, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(gen2, 2);
    assert_eq!(served_by(&addr), (pid2, 2));
    let log = server.wait_log(&format!("old worker {pid1} died, status:0"));
    assert!(log.contains("received HUP, spawning a new worker"));
    assert!(log.contains(&format!(
        "new worker is now running, sending TERM to old workers:{pid1}"
    )));
    let signals = std::fs::read_to_string(tmp.path("signals")).unwrap();
    assert_eq!(signals, format!("{pid1} SIGTERM\n"));
}

#[test]
fn a_worker_that_dies_is_replaced() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = http_server(&tmp, port, &[]);
    let (pid1, _) = served_by(&addr);
    wait_sole_generation(&tmp.path("status"), 1);
    // SAFETY: kill(2) on the worker.
    unsafe { libc::kill(pid1, libc::SIGKILL) };
    server.wait_log(&format!(
        "worker {pid1} died unexpectedly with status:9 (killed by SIGKILL), restarting"
    ));
    let (generation, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(served_by(&addr), (pid2, generation));
}

#[test]
fn a_failing_new_generation_leaves_the_old_one_serving() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = http_server(&tmp, port, &[]);
    let (pid1, _) = served_by(&addr);
    std::fs::write(tmp.path("fail"), "").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log_n(
        "seems to have failed to start, exit status:768 (exit code 3)",
        2,
    );
    // Two failed attempts later, generation 1 still serves and was never signalled.
    assert_eq!(served_by(&addr), (pid1, 1));
    assert_eq!(common::status_entries(&tmp.path("status")), vec![(1, pid1)]);
    assert!(!tmp.path("signals").exists());
    std::fs::remove_file(tmp.path("fail")).unwrap();
    let (generation, pid) = wait_sole_generation(&tmp.path("status"), 4);
    assert!(generation >= 4, "each failed attempt used up a generation");
    assert_eq!(served_by(&addr), (pid, generation));
    server.wait_log(&format!("old worker {pid1} died"));
}

#[test]
fn no_connection_is_refused_or_dropped_across_restarts() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = http_server(&tmp, port, &["--interval=0.2"]);
    served_by(&addr);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, served, addr) = (Arc::clone(&stop), Arc::clone(&served), addr.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match http_get(&addr) {
                        Ok(_) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    for generation in 2..=6 {
        server.signal(libc::SIGHUP);
        wait_sole_generation(&tmp.path("status"), generation);
    }
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(served.load(Ordering::SeqCst) > 10, "the clients did run");
}

#[test]
fn term_stops_every_worker_and_removes_the_files() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = http_server(&tmp, port, &["--signal-on-term=USR1"]);
    let (pid, _) = served_by(&format!("127.0.0.1:{port}"));
    // The worker also stops on USR1, the --signal-on-term chosen here.
    drop(server.child.stdin.take());
    server.signal(libc::SIGTERM);
    let status = server.wait_exit();
    let log = server.log();
    // The python worker only handles SIGTERM: USR1's default action kills it.
    assert!(
        log.contains(&format!("received TERM, sending USR1 to all workers:{pid}")),
        "{log}"
    );
    assert!(log.contains(&format!("worker {pid} died, status:10 (killed by SIGUSR1)")));
    assert!(log.trim_end().ends_with("exiting"), "{log}");
    assert_eq!(status.code(), Some(0));
    assert!(!alive(pid));
    assert!(!tmp.path("status").exists());
    assert!(!tmp.path("pid").exists());
}

#[test]
fn int_sends_term_to_the_workers() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = http_server(&tmp, port, &["--signal-on-term=USR1"]);
    let (pid, _) = served_by(&format!("127.0.0.1:{port}"));
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit().code(), Some(0));
    let log = server.log();
    assert!(log.contains(&format!("received INT, sending TERM to all workers:{pid}")));
    assert_eq!(
        std::fs::read_to_string(tmp.path("signals")).unwrap(),
        format!("{pid} SIGTERM\n")
    );
}

#[test]
fn hup_while_the_first_generation_starts_is_not_lost() {
    let tmp = TempDir::new();
    let port = free_port();
    let server = http_server(&tmp, port, &["--interval=1"]);
    server.wait_log("starting new worker");
    server.signal(libc::SIGHUP);
    let (generation, pid) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(generation, 2);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")), (pid, 2));
}

#[test]
fn signal_on_hup_and_kill_old_delay() {
    let tmp = TempDir::new();
    let port = free_port();
    let server = Server::start(
        &[
            format!("--port=127.0.0.1:{port}"),
            tmp.arg("--status-file", "status"),
            "--interval=0.2".into(),
            "--signal-on-hup=usr2".into(),
            "--kill-old-delay=1".into(),
            "--".into(),
            tmp.http_worker().display().to_string(),
        ],
        &[
            ("SIGNAL_LOG", tmp.path("signals").display().to_string()),
            ("STOP_SIGNALS", "SIGTERM,SIGUSR2".into()),
        ],
    );
    let (pid1, _) = served_by(&format!("127.0.0.1:{port}"));
    server.signal(libc::SIGHUP);
    let log = server.wait_log("sleeping 1 sec before killing old workers");
    assert!(log.contains(&format!(
        "new worker is now running, sending USR2 to old workers:{pid1}"
    )));
    // During the delay both generations are live and the old one has had no signal.
    assert_eq!(status_entries(&tmp.path("status")).len(), 2);
    assert!(!tmp.path("signals").exists());
    server.wait_log(&format!("killing old workers:{pid1}"));
    wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(
        std::fs::read_to_string(tmp.path("signals")).unwrap(),
        format!("{pid1} SIGUSR2\n")
    );
}

#[test]
fn auto_restart_replaces_the_worker_periodically() {
    let tmp = TempDir::new();
    let port = free_port();
    let server = http_server(
        &tmp,
        port,
        &[
            "--enable-auto-restart",
            "--auto-restart-interval=1",
            "--kill-old-delay=0",
        ],
    );
    wait_sole_generation(&tmp.path("status"), 3);
    let log = server.log();
    assert!(log.contains("autorestart triggered (interval=1)"), "{log}");
    assert!(!log.contains("received HUP"));
}

#[test]
fn auto_restart_from_the_environment() {
    let tmp = TempDir::new();
    let port = free_port();
    let worker = tmp.http_worker();
    let server = Server::start(
        &[
            format!("--port=127.0.0.1:{port}"),
            tmp.arg("--status-file", "status"),
            "--interval=0.2".into(),
            "--".into(),
            worker.display().to_string(),
        ],
        &[
            ("ENABLE_AUTO_RESTART", "1".into()),
            ("AUTO_RESTART_INTERVAL", "1".into()),
            ("KILL_OLD_DELAY", "0".into()),
        ],
    );
    wait_sole_generation(&tmp.path("status"), 2);
    server.wait_log("autorestart triggered");
}

#[test]
fn a_program_that_disappears_is_reported_as_a_failed_start() {
    let tmp = TempDir::new();
    let worker = tmp.script("vanishing.sh", SLEEPER);
    let server = tmp.start_server(&["--interval=0.1"], &[&worker.display().to_string()], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    std::fs::remove_file(&worker).unwrap();
    server.signal(libc::SIGHUP);
    let log = server.wait_log("failed to start a new worker: server program");
    assert!(log.contains("does not exist"), "{log}");
    // The old generation keeps serving; nothing was left behind by the attempts.
    assert_eq!(status_entries(&tmp.path("status")).len(), 1);
    assert!(!log.contains("left behind"), "{log}");
}

#[test]
fn a_program_that_cannot_be_executed_is_reported_as_a_failed_start() {
    let tmp = TempDir::new();
    let worker = tmp.script("worker", SLEEPER);
    let server = tmp.start_server(&["--interval=0.1"], &[&worker.display().to_string()], &[]);
    let (_, pid) = wait_sole_generation(&tmp.path("status"), 1);
    // Still there and executable, but not a program any more: execve fails in the child.
    std::fs::write(&worker, b"\x7fELF not really").unwrap();
    server.signal(libc::SIGHUP);
    let log = server.wait_log_n("failed to start a new worker: failed to exec", 2);
    assert!(log.contains("Exec format error"), "{log}");
    assert!(
        !log.contains("left behind"),
        "the failed child was reaped: {log}"
    );
    assert_eq!(status_entries(&tmp.path("status")), vec![(1, pid)]);
}
