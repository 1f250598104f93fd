//! Readiness and honest reloads: READY=1 from the worker, --ready-timeout, --restart's outcome,
//! --kill-old-timeout, backoff, HUP storms, workers that daemonize, shutdown during a start.

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

fn start(tmp: &TempDir, port: u16, options: &[&str], env: &[(&str, String)]) -> Server {
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--status-file", "status"),
        tmp.arg("--pid-file", "pid"),
    ];
    a.extend(args(options));
    a.push("--".into());
    a.push(tmp.http_worker().display().to_string());
    let mut env = env.to_vec();
    env.push(("FAIL_IF_EXISTS", tmp.path("fail").display().to_string()));
    Server::start(&a, &env)
}

#[test]
fn a_ready_worker_takes_over_without_waiting_for_the_interval() {
    let tmp = TempDir::new();
    let port = free_port();
    // An interval far beyond the test's patience: only READY=1 can make these generations start.
    let server = start(
        &tmp,
        port,
        &["--interval=600"],
        &[("SEND_READY", "1".into())],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGHUP);
    let (generation, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(generation, 2);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")), (pid2, 2));
    let log = server.log();
    assert!(
        log.contains(&format!("new worker {pid1} is ready (READY=1)")),
        "{log}"
    );
    assert!(
        log.contains(&format!("new worker {pid2} is ready (READY=1)")),
        "{log}"
    );
}

#[test]
fn a_worker_that_never_says_ready_is_stopped_and_the_old_one_keeps_serving() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let ready_flag = tmp.path("ready");
    fs::write(&ready_flag, "").unwrap();
    // The wrapper sends READY only while the flag file exists.
    let worker = tmp.http_worker_ready_while(&ready_flag);
    let server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--ready-timeout=1",
            "--",
            &worker.display().to_string(),
        ]),
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    fs::remove_file(&ready_flag).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push(
                    http_get(&addr)
                        .map(|b| parse_served(&b).0)
                        .map_err(|e| e.to_string()),
                );
            }
            answers
        })
    };
    server.signal(libc::SIGHUP);
    let log = server.wait_log("did not send READY=1 within 1 sec, stopping it");
    let silent: i32 = log
        .lines()
        .filter(|l| l.contains("did not send READY=1"))
        .find_map(|l| {
            l.strip_prefix("new worker ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the silent worker's pid");
    wait_until("the silent worker to be gone", || {
        (!alive(silent)).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let answers = client.join().unwrap();
    assert!(!answers.is_empty());
    // No request failed (the silent worker shares the socket and may answer some while on
    // trial; it finishes them when stopped).
    for answer in &answers {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert!(alive(pid1));
    assert_eq!(served_by(&addr), (pid1, 1));
    assert_eq!(status_entries(&tmp.path("status")), vec![(1, pid1)]);
}

#[test]
fn restart_reports_a_failed_new_generation() {
    let tmp = TempDir::new();
    let port = free_port();
    let _server = start(&tmp, port, &["--interval=0.2"], &[]);
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    fs::write(tmp.path("fail"), "").unwrap();
    let (status, log) = run(&args(&[
        "--restart",
        &tmp.arg("--pid-file", "pid"),
        &tmp.arg("--status-file", "status"),
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "restart failed: generation 2 did not start (exit status:768 (exit code 3)): \
             generation 1 is still serving"
        ),
        "{log}"
    );
    assert_eq!(served_by(&format!("127.0.0.1:{port}")), (pid1, 1));
}

#[test]
fn kill_old_timeout_kills_a_stubborn_old_worker() {
    let tmp = TempDir::new();
    let worker = tmp.script(
        "stubborn.sh",
        "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n",
    );
    let server = tmp.start_server(
        &["--interval=0.1", "--kill-old-timeout=0.5"],
        &[&worker.display().to_string()],
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    let log = server.wait_log(&format!(
        "old worker {pid1} died, status:9 (killed by SIGKILL)"
    ));
    assert!(
        log.contains(&format!(
            "workers still alive after their signal, sending KILL:{pid1}"
        )),
        "{log}"
    );
}

#[test]
fn repeated_failures_back_off_and_reset_after_a_success() {
    let tmp = TempDir::new();
    let port = free_port();
    fs::write(tmp.path("fail"), "").unwrap();
    let server = start(
        &tmp,
        port,
        &["--interval=0.1", "--max-restart-delay=0.4"],
        &[],
    );
    // Failures 4, 5, 6, 7 wait 0.1, 0.2, 0.4 (capped), 0.4 s more; logged when it changes.
    server.wait_log_n("seems to have failed to start", 7);
    let log = server.wait_log("6 failed starts in a row: backing off, 0.4 secs more");
    for (n, delay) in [(4, "0.1"), (5, "0.2")] {
        let line = format!("{n} failed starts in a row: backing off, {delay} secs more");
        assert!(log.contains(&line), "{line} missing:\n{log}");
    }
    assert!(
        !log.contains("7 failed starts"),
        "not logged again at 0.4:\n{log}"
    );
    assert!(
        !log.contains("3 failed starts in a row"),
        "the first three keep the pace"
    );
    fs::remove_file(tmp.path("fail")).unwrap();
    let (generation, pid) = wait_sole_generation(&tmp.path("status"), 8);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")), (pid, generation));
    // After a success (a worker that lived past the minimum uptime, 1 s) the count starts
    // again: one failure does not back off.
    wait_until("the worker to have lived 2 s", || {
        (age(pid)? >= 2.0).then_some(())
    });
    let before = server.log().matches("backing off").count();
    fs::write(tmp.path("fail"), "").unwrap();
    // SAFETY: kill(2) on the worker.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    server.wait_log_n("seems to have failed to start", 8);
    server.wait_log("restarts are back to their normal pace");
    assert_eq!(server.log().matches("backing off").count(), before);
}

#[test]
fn a_storm_of_hups_ends_with_one_generation_and_no_zombie() {
    let tmp = TempDir::new();
    let port = free_port();
    let server = start(&tmp, port, &["--interval=0.2"], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    for _ in 0..50 {
        server.signal(libc::SIGHUP);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Settled: one generation listed, serving, no trial left, no zombie among the children.
    let (generation, pid) = wait_until("the storm to settle", || {
        let entries = status_entries(&tmp.path("status"));
        let settled = entries.len() == 1
            && children(server.pid()) == vec![entries[0].1]
            && served_by(&format!("127.0.0.1:{port}")).0 == entries[0].1;
        settled.then(|| entries[0])
    });
    assert!(generation >= 2);
    assert!(zombies_among_children(server.pid()).is_empty());
    assert!(alive(pid));
    let hups = server.log().matches("received HUP").count();
    assert!(hups >= 1, "{}", server.log());
}

#[test]
fn a_worker_that_daemonizes_leaves_nothing_behind() {
    let tmp = TempDir::new();
    let pidfile = tmp.path("daemon.pid");
    // Forks a long-lived child and exits: the classic daemonizing program.
    let worker = tmp.script(
        "daemonizing.sh",
        &format!(
            "#!/bin/sh\nif [ \"$SERVER_STARTER_GENERATION\" = 1 ]; then sleep 600 & echo $! > {}; exit 0; fi\nexec sleep 600\n",
            pidfile.display()
        ),
    );
    let mut server = tmp.start_server(&["--interval=0.2"], &[&worker.display().to_string()], &[]);
    let (generation, _) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(generation, 2);
    let orphan: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    server.wait_log(&format!(
        "process {orphan} was left behind by a worker, sending TERM"
    ));
    server.wait_log(&format!("process {orphan} left behind by a worker exited"));
    assert!(!alive(orphan));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn shutdown_while_a_generation_starts_leaves_no_process() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = start(&tmp, port, &["--interval=600"], &[]);
    let log = server.wait_log("starting new worker");
    let pid: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("starting new worker ")?.trim().parse().ok())
        .unwrap();
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!alive(pid));
    assert!(
        server
            .log()
            .contains(&format!("received TERM, sending TERM to all workers:{pid}"))
    );
}

#[test]
fn the_workers_status_shows_in_start_servers_own() {
    let tmp = TempDir::new();
    let port = free_port();
    let systemd = NotifySocket::at_path(&tmp.path("systemd.sock"));
    let _server = start(
        &tmp,
        port,
        &["--interval=600"],
        &[
            ("SEND_READY", "1".into()),
            ("NOTIFY_SOCKET", systemd.address.clone()),
        ],
    );
    let (_, pid) = wait_sole_generation(&tmp.path("status"), 1);
    systemd.wait_for(&[
        "READY=1",
        &format!("STATUS=generation 1 (pid {pid}) serving: python worker up"),
    ]);
}
