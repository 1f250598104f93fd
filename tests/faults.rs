//! Faults and hostile surroundings: whatever workers do, start_server keeps supervising and
//! each fault ends in a defined, logged state.

mod common;

use common::*;

// ---------------------------------------------------------------------------------------------
// Crash loops and misbehaving workers: a worker that exits at once with --interval=0, a worker
// that ignores TERM, a worker that forks a thousand children, a worker that closes fds 0-2.
// ---------------------------------------------------------------------------------------------

/// The HTTP worker with a shell prologue run first (in the shell that then execs it).
fn worker_after(tmp: &TempDir, name: &str, prologue: &str) -> std::path::PathBuf {
    let worker = tmp.http_worker();
    tmp.script(
        name,
        &format!("#!/bin/sh\n{prologue}\nexec {}\n", worker.display()),
    )
}

#[test]
fn a_crash_loop_with_interval_zero_backs_off_and_says_so() {
    let tmp = TempDir::new();
    let systemd = NotifySocket::at_path(&tmp.path("systemd.sock"));
    let crash = tmp.script("crash.sh", "#!/bin/sh\nexit 0\n");
    let mut server = tmp.start_server(
        &["--interval=0", "--max-restart-delay=2"],
        &[&crash.display().to_string()],
        &[("NOTIFY_SOCKET", systemd.address.clone())],
    );
    // Without backoff this is reached never (the count restarts at every "successful" start)
    // and thousands of workers a second are spawned; with it, after a handful of attempts.
    let log = server.wait_log("failed starts in a row: backing off, 0.8 secs more");
    let spawned = log.matches("starting new worker").count();
    assert!(
        spawned < 30,
        "{spawned} spawns before an 0.8 s backoff:\n{log}"
    );
    assert_eq!(
        log.matches("backing off, 0.4 secs more").count(),
        1,
        "logged once per change:\n{log}"
    );
    systemd.wait_for(&[
        "STATUS=no worker serving: ",
        "STATUS=no worker serving: 7 failed",
    ]);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn a_worker_ignoring_term_is_killed_after_kill_old_timeout() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "deaf.sh", "trap '' TERM");
    let server = tmp.start_server(
        &[
            &format!("--port=127.0.0.1:{port}"),
            "--interval=0.3",
            "--kill-old-timeout=1",
        ],
        &[&worker.display().to_string()],
        &[("STOP_SIGNALS", "SIGUSR2".into())],
    );
    let (pid1, _) = served_by(&addr);
    server.signal(libc::SIGHUP);
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    let log = server.wait_log(&format!("old worker {pid1} died"));
    assert!(
        log.contains(&format!(
            "workers still alive after their signal, sending KILL:{pid1}"
        )),
        "{log}"
    );
    assert!(!alive(pid1));
    assert_eq!(served_by(&addr).0, pid2);
}

#[test]
fn a_worker_ignoring_term_is_waited_for_without_blocking_reloads() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "deaf.sh", "trap '' TERM");
    let server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=0.3"],
        &[&worker.display().to_string()],
        &[("STOP_SIGNALS", "SIGUSR2".into())],
    );
    let (pid1, _) = served_by(&addr);
    server.signal(libc::SIGHUP);
    server.wait_log(&format!("killing old workers:{pid1}"));
    // Like the original: still alive, still listed, waited for; and reloads go on.
    server.signal(libc::SIGHUP);
    let status = tmp.path("status");
    // (Generation 2 ignores TERM too once generation 3 serves.)
    let entries = wait_until("generations 1, 2 and 3 listed", || {
        let entries = status_entries(&status);
        (entries.len() == 3 && entries[2].0 == 3).then_some(entries)
    });
    assert_eq!(entries[0], (1, pid1));
    assert!(alive(pid1) && alive(entries[1].1));
    // All three still hold the listening socket: any of them may answer.
    let (pid, generation) = served_by(&addr);
    assert!(entries.contains(&(generation, pid)), "{entries:?}");
}

#[test]
fn a_worker_forking_a_thousand_children_does_not_hold_start_server() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let children = tmp.path("children");
    let worker = worker_after(
        &tmp,
        "forker.sh",
        &format!(
            "if [ \"$SERVER_STARTER_GENERATION\" = 1 ]; then\n\
             for i in $(seq 1000); do sleep 1000 & echo $! >> {0}; done\n\
             echo done >> {0}\nfi",
            children.display()
        ),
    );
    let mut server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=0.3"],
        &[&worker.display().to_string()],
        &[],
    );
    let (pid1, _) = served_by(&addr);
    let pids: Vec<i32> = wait_until("the thousand children", || {
        let text = std::fs::read_to_string(&children).ok()?;
        text.ends_with("done\n")
            .then(|| text.lines().filter_map(|l| l.parse().ok()).collect())
    });
    assert_eq!(pids.len(), 1000);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    server.wait_log(&format!("old worker {pid1} died"));
    // What the old worker left behind is stopped and reaped; start_server goes on.
    wait_until("the children left behind to be gone", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    server.signal(libc::SIGHUP);
    let (_, pid3) = wait_sole_generation(&tmp.path("status"), 3);
    assert_eq!(served_by(&addr), (pid3, 3));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn a_worker_closing_fds_0_to_2_is_supervised_as_any_other() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "closer.sh", "exec 0<&- 1>&- 2>&-");
    let mut server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=30"],
        &[&worker.display().to_string()],
        &[("SEND_READY", "1".into())],
    );
    // READY=1 (from a socket that got fd 0) promotes it well before --interval=30.
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(served_by(&addr).0, pid1);
    server.signal(libc::SIGHUP);
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(served_by(&addr).0, pid2);
    server.wait_log(&format!("old worker {pid1} died"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}
