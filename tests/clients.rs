//! The client modes (`--restart`, `--stop`), `--daemonize`, `--log-file`, `--backlog`, and the
//! original's command-line conventions (single-dash options, help, version).

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn serving(tmp: &TempDir, port: u16, extra: &[&str]) -> Server {
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--pid-file", "pid"),
        tmp.arg("--status-file", "status"),
        "--interval=0.2".to_string(),
    ];
    a.extend(args(extra));
    a.push("--".into());
    a.push(tmp.http_worker().display().to_string());
    Server::start(&a, &[])
}

#[test]
fn restart_waits_for_the_new_generation() {
    let tmp = TempDir::new();
    let port = free_port();
    let _server = serving(&tmp, port, &[]);
    let (_, old_pid) = wait_sole_generation(&tmp.path("status"), 1);
    let (status, log) = run(&args(&[
        "--restart",
        &tmp.arg("--pid-file", "pid"),
        &tmp.arg("--status-file", "status"),
    ]));
    assert_eq!(status.code(), Some(0), "{log}");
    // When --restart returns, the new generation is the only one left.
    let entries = status_entries(&tmp.path("status"));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, 2);
    assert!(!alive(old_pid));
    assert_eq!(served_by(&format!("127.0.0.1:{port}")), (entries[0].1, 2));
    assert!(log.contains("restarted: generation 2 is serving"), "{log}");
}

#[test]
fn stop_waits_until_start_server_is_gone() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = serving(&tmp, port, &[]);
    let (_, worker) = wait_sole_generation(&tmp.path("status"), 1);
    let (status, log) = run(&args(&["--stop", &tmp.arg("--pid-file", "pid")]));
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("stopping now (pid:{})", server.pid())));
    // By the time --stop returns, start_server has cleaned up: pid file gone, worker gone.
    assert!(!tmp.path("pid").exists());
    assert!(!tmp.path("status").exists());
    assert!(!alive(worker));
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn daemonize_detaches_and_writes_the_daemons_pid() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut launcher = serving(
        &tmp,
        port,
        &[
            "--daemonize",
            &tmp.arg("--log-file", "log"),
            &tmp.arg("--path", "d.sock"),
        ],
    );
    assert_eq!(launcher.wait_exit().code(), Some(0));
    let (_, worker) = wait_sole_generation(&tmp.path("status"), 1);
    let daemon: i32 = fs::read_to_string(tmp.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(daemon, launcher.pid());
    assert!(alive(daemon));
    // The daemon leads no session of the caller's: it is a session member, not the leader.
    let stat = fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let (pgid, sid): (i32, i32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
    assert_ne!(sid, daemon, "second fork: not a session leader");
    assert_ne!(pgid, launcher.pid());
    assert_eq!(
        fs::read_link(format!("/proc/{daemon}/fd/0")).unwrap(),
        std::path::PathBuf::from("/dev/null")
    );
    assert!(
        tmp.path("d.sock").exists(),
        "the exiting parents left the socket file"
    );
    assert_eq!(served_by(&format!("127.0.0.1:{port}")).1, 1);
    let (status, _) = run(&args(&["--stop", &tmp.arg("--pid-file", "pid")]));
    assert_eq!(status.code(), Some(0));
    assert!(!alive(worker));
    let log = fs::read_to_string(tmp.path("log")).unwrap();
    assert!(log.contains("starting new worker"), "{log}");
    assert!(log.trim_end().ends_with("exiting"), "{log}");
    assert!(
        !tmp.path("d.sock").exists(),
        "the daemon removed it on exit"
    );
}

#[test]
fn log_file_appends_our_and_the_workers_output() {
    let tmp = TempDir::new();
    fs::write(tmp.path("log"), "earlier line\n").unwrap();
    let worker = tmp.script(
        "talk.sh",
        "#!/bin/sh\necho \"worker says hi\"\nexec sleep 600\n",
    );
    let mut server = Server::start(
        &args(&[
            &tmp.arg("--log-file", "log"),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--",
            &worker.display().to_string(),
        ]),
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    let log = wait_until("the worker's line in the log", || {
        let log = fs::read_to_string(tmp.path("log")).ok()?;
        log.contains("worker says hi").then_some(log)
    });
    assert!(log.starts_with("earlier line\n"), "appended: {log}");
    assert!(log.contains("starting new worker"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(
        fs::read_to_string(tmp.path("log"))
            .unwrap()
            .contains("exiting")
    );
}

#[test]
fn log_file_can_be_a_command() {
    let tmp = TempDir::new();
    let out = tmp.path("piped");
    let mut server = Server::start(
        &args(&[
            &format!("--log-file=| sed -u 's/^/piped: /' >> {}", out.display()),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--",
            "/bin/sleep",
            "600",
        ]),
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    // start_server waits for the log command to drain before it exits.
    let log = fs::read_to_string(&out).unwrap();
    assert!(log.contains("piped: starting new worker"), "{log}");
    assert!(log.contains("piped: exiting"), "{log}");
}

#[test]
fn backlog_is_passed_to_listen() {
    let tmp = TempDir::new();
    let port = free_port();
    let _server = serving(&tmp, port, &["--backlog=7"]);
    wait_sole_generation(&tmp.path("status"), 1);
    let output = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&output.stdout);
    // For a listening socket, ss shows the backlog as Send-Q (the third column).
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("7"), "{text}");
}

#[test]
fn single_dash_long_options_and_option_abbreviations_work() {
    let tmp = TempDir::new();
    let port = free_port();
    let _server = Server::start(
        &args(&[
            &format!("-port=127.0.0.1:{port}"),
            "-interval",
            "0.1",
            &format!("--status={}", tmp.path("status").display()),
            "--",
            &tmp.http_worker().display().to_string(),
        ]),
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")).1, 1);
}

#[test]
fn help_and_version() {
    let output = Command::new(bin()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--port",
        "--path",
        "--backlog",
        "--dir",
        "--interval",
        "--signal-on-hup",
        "--signal-on-term",
        "--pid-file",
        "--status-file",
        "--envdir",
        "--log-file",
        "--daemonize",
        "--enable-auto-restart",
        "--auto-restart-interval",
        "--kill-old-delay",
        "--restart",
        "--stop",
        "--version",
    ] {
        assert!(help.contains(option), "{option} missing from --help");
    }
    let output = Command::new(bin()).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("start_server "));
}

#[test]
fn restart_reports_a_start_server_that_dies_meanwhile() {
    let tmp = TempDir::new();
    let port = free_port();
    // The first generation starts at once (READY=1); a --restart's never does (--ready-timeout
    // far away, and the new worker is told not to send READY).
    let flag = tmp.path("ready");
    fs::write(&flag, "").unwrap();
    let worker = tmp.http_worker_ready_while(&flag);
    let server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--pid-file", "pid"),
            &tmp.arg("--status-file", "status"),
            "--ready-timeout=600",
            "--",
            &worker.display().to_string(),
        ]),
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    fs::remove_file(&flag).unwrap();
    let mut client = Server::start(
        &args(&[
            "--restart",
            &tmp.arg("--pid-file", "pid"),
            &tmp.arg("--status-file", "status"),
        ]),
        &[],
    );
    server.wait_log_n("starting new worker", 2);
    assert!(client.child.try_wait().unwrap().is_none(), "still waiting");
    server.signal(libc::SIGKILL);
    assert_eq!(client.wait_exit().code(), Some(1));
    assert!(
        client.log().contains(&format!(
            "start_server (pid {}) exited before a new generation took over",
            server.pid()
        )),
        "{}",
        client.log()
    );
}
