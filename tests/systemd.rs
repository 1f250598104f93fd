//! The systemd side without PID-1 systemd: `systemd-socket-activate` hands over sockets, a
//! test-owned datagram socket plays `NOTIFY_SOCKET`, and `JOURNAL_STREAM` decides the log target.

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// start_server under `systemd-socket-activate -l ADDR... --fdname=NAMES`, with the report
/// worker; connects once to the first address, which is what makes it start.
fn activated(
    tmp: &TempDir,
    listen: &[String],
    names: &str,
    options: &[String],
    env: &[(&str, String)],
) -> (Server, String) {
    let mut command = socket_activate(listen, names);
    command.arg(format!("--setenv=REPORT={}", tmp.path("report").display()));
    for (name, _) in env {
        command.arg(format!("--setenv={name}"));
    }
    command.arg(bin()).args(options);
    command.arg("--").arg(tmp.report_worker());
    let server = Server::spawn(command, env);
    let first = if listen[0].contains(':') {
        listen[0].clone()
    } else {
        format!("127.0.0.1:{}", listen[0])
    };
    wait_listening(&first);
    let report = tmp.wait_report();
    (server, report)
}

#[test]
fn inherited_sockets_are_used_and_passed_on_with_bound_ones() {
    let tmp = TempDir::new();
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let path = tmp.path("app.sock");
    let (server, report) = activated(
        &tmp,
        &[
            format!("127.0.0.1:{p1}"),
            format!("[::1]:{p2}"),
            path.display().to_string(),
        ],
        "web:web6:local",
        &[
            format!("--port=127.0.0.1:{p1}"),
            format!("--port=127.0.0.1:{p3}"),
        ],
        &[],
    );
    // The named one keeps the key as written; the bound one follows; the inherited ones nobody
    // named come last, keyed by their address.
    assert_eq!(
        env_value(&report, "SERVER_STARTER_PORT"),
        Some(format!(
            "127.0.0.1:{p1}=3;127.0.0.1:{p3}=4;[::1]:{p2}=5;{}=6",
            path.display()
        ))
    );
    // The same sockets in the systemd convention, for this worker: systemd's names for the
    // inherited ones, the address for the bound one, LISTEN_PID its own pid.
    assert_eq!(env_value(&report, "LISTEN_FDS").as_deref(), Some("4"));
    assert_eq!(
        env_value(&report, "LISTEN_FDNAMES"),
        Some(format!("web:127.0.0.1_{p3}:web6:local"))
    );
    let pid = report
        .rsplit_once("\"pid\": ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .expect("pid in the report");
    assert_eq!(env_value(&report, "LISTEN_PID").as_deref(), Some(pid));
    let log = server.log();
    assert!(
        log.contains(&format!("using socket 127.0.0.1:{p1} (web) from systemd")),
        "{log}"
    );
    assert!(
        log.contains(&format!("using socket [::1]:{p2} (web6) from systemd")),
        "{log}"
    );
    assert!(log.contains(&format!(
        "using socket {} (local) from systemd",
        path.display()
    )));
    assert!(report.contains("\"family\": \"AF_INET6\""));
    assert!(report.contains("\"family\": \"AF_UNIX\""));
}

#[test]
fn an_ipv6_any_port_takes_the_dual_stack_socket_of_listen_stream_port() {
    // A bare --port=P asks for IPv4 and refuses this socket (tests/dual_stack.rs); a worker that
    // serves IPv6 names it as it is, and gets it keyed so.
    let tmp = TempDir::new();
    let port = free_port();
    let (server, report) = activated(
        &tmp,
        &[format!("{port}")],
        "http",
        &[format!("--port=[::]:{port}")],
        &[],
    );
    assert_eq!(
        env_value(&report, "SERVER_STARTER_PORT"),
        Some(format!("[::]:{port}=3"))
    );
    assert!(report.contains("\"family\": \"AF_INET6\""), "{report}");
    assert!(
        server
            .log()
            .contains(&format!("using socket [::]:{port} (http)"))
    );
}

#[test]
fn the_same_command_line_works_without_the_socket_unit() {
    // A bare --port, as with ListenStream=0.0.0.0:P, but no LISTEN_FDS: start_server binds it.
    let tmp = TempDir::new();
    let port = free_port();
    let worker = tmp.report_worker();
    let _server = Server::start(
        &args(&[
            &format!("--port={port}"),
            "--",
            &worker.display().to_string(),
        ]),
        &[("REPORT", tmp.path("report").display().to_string())],
    );
    let report = tmp.wait_report();
    assert_eq!(
        env_value(&report, "SERVER_STARTER_PORT"),
        Some(format!("{port}=3"))
    );
}

/// Runs start_server from a shell snippet (to set LISTEN_PID=$$ and stray fds) and returns
/// its exit code and stderr.
fn from_shell(snippet: &str) -> (Option<i32>, String) {
    let mut command = Command::new("/bin/sh");
    command.args(["-c", snippet, "sh", bin()]);
    let mut server = Server::spawn(command, &[]);
    let status = server.wait_exit();
    (status.code(), server.log())
}

#[test]
fn bad_activation_variables_are_named_in_the_error() {
    let (code, log) = from_shell(r#"LISTEN_PID=$$ LISTEN_FDS=abc exec "$1" -- /bin/true"#);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("LISTEN_FDS=\"abc\""), "{log}");
    let (code, log) = from_shell(r#"exec 3<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$1" -- /bin/true"#);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("LISTEN_FDS=\"1\""), "{log}");
    let (code, log) =
        from_shell(r#"exec 3</dev/null; LISTEN_PID=$$ LISTEN_FDS=1 exec "$1" -- /bin/true"#);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("LISTEN_FDS=\"1\": fd 3"), "{log}");
    assert!(log.contains("is not a socket"), "{log}");
    let (code, log) = from_shell(
        r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=a:b exec "$1" -- /bin/true 3</dev/null"#,
    );
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("LISTEN_FDNAMES=\"a:b\""), "{log}");
}

#[test]
fn variables_for_another_pid_are_ignored_and_not_passed_on() {
    let tmp = TempDir::new();
    let worker = tmp.report_worker();
    let _server = Server::start(
        &args(&["--", &worker.display().to_string()]),
        &[
            ("REPORT", tmp.path("report").display().to_string()),
            ("LISTEN_PID", "1".into()),
            ("LISTEN_FDS", "1".into()),
            // Names for a count that is not ours: sd_listen_fds() ignores all three.
            ("LISTEN_FDNAMES", "web".into()),
            ("LISTEN_PIDFDID", "4242".into()),
        ],
    );
    let report = tmp.wait_report();
    assert_eq!(
        env_value(&report, "SERVER_STARTER_PORT").as_deref(),
        Some("")
    );
    for name in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
    ] {
        assert_eq!(env_value(&report, name), None, "{name}");
    }
}

#[test]
fn activated_workers_never_get_start_servers_listen_pidfdid() {
    let tmp = TempDir::new();
    let port = free_port();
    // systemd 258+ sets LISTEN_PIDFDID for start_server; a worker's sd_listen_fds() would take
    // it for its own and reject the sockets.
    let mut command = socket_activate(&[format!("127.0.0.1:{port}")], "web");
    command
        .arg(format!("--setenv=REPORT={}", tmp.path("report").display()))
        .args(["sh", "-c", "LISTEN_PIDFDID=99 exec \"$0\" \"$@\""])
        .arg(bin())
        .arg(format!("--port=127.0.0.1:{port}"))
        .arg("--")
        .arg(tmp.report_worker());
    let _server = Server::spawn(command, &[]);
    wait_listening(&format!("127.0.0.1:{port}"));
    let report = tmp.wait_report();
    assert_eq!(env_value(&report, "LISTEN_FDS").as_deref(), Some("1"));
    assert_eq!(env_value(&report, "LISTEN_FDNAMES").as_deref(), Some("web"));
    assert_eq!(env_value(&report, "LISTEN_PIDFDID"), None);
}

#[test]
fn a_socket_its_unit_did_not_name_is_logged_without_systemds_placeholder_name() {
    let tmp = TempDir::new();
    let port = free_port();
    let (server, _) = activated(
        &tmp,
        &[format!("127.0.0.1:{port}")],
        "",
        &[format!("--port=127.0.0.1:{port}")],
        &[],
    );
    let log = server.wait_log(&format!("using socket 127.0.0.1:{port} from systemd"));
    assert!(!log.contains("(unknown)"), "{log}");
}

#[test]
fn no_reloading_is_sent_before_the_first_ready() {
    let tmp = TempDir::new();
    let notify = NotifySocket::at_path(&tmp.path("notify"));
    let server = Server::start(
        &args(&[
            &tmp.arg("--status-file", "status"),
            "--interval=2",
            "--",
            "/bin/sleep",
            "600",
        ]),
        &[("NOTIFY_SOCKET", notify.address.clone())],
    );
    // Generation 1 is still on its --interval trial: systemd has not seen READY=1.
    server.wait_log("starting new worker");
    server.signal(libc::SIGHUP);
    notify.wait_for(&["RELOADING=1"]);
    let sent = notify.all();
    let first = |line: &str| {
        sent.iter()
            .position(|m| m.lines().any(|l| l == line))
            .unwrap_or(usize::MAX)
    };
    assert!(first("READY=1") < first("RELOADING=1"), "{sent:#?}");
    wait_sole_generation(&tmp.path("status"), 2);
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// The STATUS= lines the README shows as what systemd gets.
fn readme_status_examples() -> Vec<String> {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = "<!-- tests/systemd.rs checks that start_server sends these STATUS= lines -->";
    let after = readme
        .split_once(marker)
        .expect("the README's STATUS= examples")
        .1;
    let block = after.split("```").nth(1).expect("a fenced block");
    let lines: Vec<String> = block.lines().skip(1).map(str::to_string).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    lines
}

fn notify_scenario(notify: &NotifySocket) {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--status-file", "status"),
            "--interval=0.2",
            "--",
            &tmp.http_worker().display().to_string(),
        ]),
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("FAIL_IF_EXISTS", tmp.path("fail").display().to_string()),
        ],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    // The worker never sees systemd's NOTIFY_SOCKET: it gets start_server's own.
    let environ = fs::read(format!("/proc/{pid1}/environ")).expect("the worker's environment");
    let environ = String::from_utf8_lossy(&environ);
    let worker_notify = environ
        .split('\0')
        .find_map(|v| v.strip_prefix("NOTIFY_SOCKET="))
        .expect("a NOTIFY_SOCKET for the worker");
    assert_ne!(worker_notify, notify.address);
    assert!(
        worker_notify.starts_with("@start_server/"),
        "{worker_notify}"
    );
    let ready = notify.wait_for(&["READY=1"]);
    assert!(
        ready.contains(&format!("STATUS=generation 1 (pid {pid1}) serving")),
        "{ready}"
    );

    // A good reload: RELOADING=1 with a plausible MONOTONIC_USEC, then READY=1 for generation 2.
    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let reloading = notify.wait_for(&["RELOADING=1", "MONOTONIC_USEC="]);
    let after = monotonic_usec();
    let stamp: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC value");
    assert!(
        before <= stamp && stamp <= after,
        "{before} <= {stamp} <= {after}"
    );
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    notify.wait_for(&[
        "READY=1",
        &format!("STATUS=generation 2 (pid {pid2}) serving"),
    ]);

    // A failed reload ends with READY=1 too, and STATUS says the old generation still serves.
    fs::write(tmp.path("fail"), "").unwrap();
    server.signal(libc::SIGHUP);
    let failed = notify.wait_for(&["READY=1", "STATUS=reload failed: generation 3"]);
    assert!(
        failed.contains(&format!("generation 2 (pid {pid2}) still serving")),
        "{failed}"
    );
    // The README's examples of STATUS= are what was sent (with these pids).
    let sent = notify.all().join("\n");
    for example in readme_status_examples() {
        let line = example
            .replace("4242", &pid1.to_string())
            .replace("4250", &pid2.to_string());
        assert!(
            sent.lines().any(|l| l == format!("STATUS={line}")),
            "README's STATUS= example {example:?} was not sent:\n{sent}"
        );
    }

    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    notify.wait_for(&["STOPPING=1"]);
}

#[test]
fn notifications_to_a_socket_path() {
    let tmp = TempDir::new();
    let notify = NotifySocket::at_path(&tmp.path("notify"));
    notify_scenario(&notify);
}

#[test]
fn notifications_to_an_abstract_socket() {
    let notify = NotifySocket::abstract_name(&format!("ss-test-notify-{}", std::process::id()));
    notify_scenario(&notify);
}

#[test]
fn watchdog_pings_at_half_the_timeout_when_it_is_ours() {
    let tmp = TempDir::new();
    let notify = NotifySocket::at_path(&tmp.path("notify"));
    let _server = Server::start(
        &args(&["--interval=0.1", "--", "/bin/sleep", "600"]),
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("WATCHDOG_USEC", "200000".into()),
        ],
    );
    wait_until("three WATCHDOG=1", || {
        (notify
            .all()
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count()
            >= 3)
            .then_some(())
    });
    let other = TempDir::new();
    let quiet = NotifySocket::at_path(&other.path("notify"));
    let quiet_server = Server::start(
        &args(&["--interval=0.1", "--", "/bin/sleep", "600"]),
        &[
            ("NOTIFY_SOCKET", quiet.address.clone()),
            ("WATCHDOG_USEC", "200000".into()),
            ("WATCHDOG_PID", "1".into()),
        ],
    );
    quiet.wait_for(&["READY=1"]);
    // Two more generations take at least two 0.1 s intervals: a 0.1 s watchdog would show.
    for generation in 2..=3 {
        quiet_server.signal(libc::SIGHUP);
        quiet.wait_for(&[&format!("STATUS=generation {generation} ")]);
    }
    assert!(!quiet.all().iter().any(|m| m.contains("WATCHDOG=1")));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
    let tmp = TempDir::new();
    let mut server = tmp.start_server(&["--interval=0.1"], &["/bin/sleep", "600"], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(!server.log().contains("notify"), "{}", server.log());
}

/// Runs start_server inside a private mount namespace where a stand-in journald listens on
/// /run/systemd/journal/socket; returns (what reached the journal, start_server's stderr).
fn with_fake_journal(journal_stream_matches: bool) -> (String, String) {
    let tmp = TempDir::new();
    let helper = tmp.script(
        "journal.py",
        r#"#!/usr/bin/env python3
import os, socket, subprocess, sys, time
os.makedirs("/run/systemd/journal", exist_ok=True)
journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
journal.bind("/run/systemd/journal/socket")
journal.settimeout(0.2)
def fields(datagram):
    # journald's native protocol: KEY=VALUE lines, or KEY, newline, 64-bit length, VALUE.
    out, i = [], 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            out.append(line.decode())
            i = nl + 1
        else:
            size = int.from_bytes(datagram[nl + 1:nl + 9], "little")
            out.append(line.decode() + "=" + datagram[nl + 9:nl + 9 + size].decode())
            i = nl + 9 + size + 1
    return "\n".join(out)
err = open(sys.argv[1], "w")
st = os.fstat(err.fileno())
env = dict(os.environ)
env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino) if sys.argv[3] == "yes" else "1:1"
server = subprocess.Popen([sys.argv[2], "--interval=0.1", "--", "/bin/sleep", "600"],
                          stderr=err, env=env)
entries, deadline = [], time.time() + 30
while time.time() < deadline and not any(b"new worker is now running" in e for e in entries):
    try:
        entries.append(journal.recv(65536))
    except socket.timeout:
        if open(sys.argv[1]).read().count("new worker is now running"):
            break
server.terminate()
server.wait()
sys.stdout.write("\n--\n".join(fields(e) for e in entries))
"#,
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let output = Command::new("unshare")
        .args(if root { vec!["-m"] } else { vec!["-rm"] })
        .args([
            "sh",
            "-c",
            r#"mount -t tmpfs tmpfs /run && exec "$@""#,
            "sh",
            &helper.display().to_string(),
            &tmp.path("stderr").display().to_string(),
            bin(),
            if journal_stream_matches { "yes" } else { "no" },
        ])
        .output()
        .expect("run unshare");
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        fs::read_to_string(tmp.path("stderr")).unwrap_or_default(),
    )
}

#[test]
fn logs_go_natively_to_the_journal_when_stderr_is_the_journal() {
    let (journal, stderr) = with_fake_journal(true);
    assert!(!stderr.contains("starting new worker"), "stderr: {stderr}");
    let entry = journal
        .split("\n--\n")
        .find(|e| e.contains("MESSAGE=starting new worker"))
        .unwrap_or_else(|| panic!("no journal entry: {journal}"));
    assert!(entry.contains("SYSLOG_IDENTIFIER=start_server"), "{entry}");
    assert!(entry.contains("PRIORITY=5"), "info level: {entry}");
    assert!(entry.contains("GENERATION=1"), "{entry}");
    assert!(entry.contains("WORKER_PID="), "{entry}");
}

#[test]
fn logs_stay_on_stderr_when_journal_stream_is_not_stderr() {
    let (journal, stderr) = with_fake_journal(false);
    assert!(stderr.contains("starting new worker"), "stderr: {stderr}");
    assert!(!journal.contains("MESSAGE="), "{journal}");
}

#[test]
fn inherited_udp_sockets_are_passed_on_and_matched() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    let mut command = Command::new("systemd-socket-activate");
    command.args([
        "--datagram",
        &format!("--listen=127.0.0.1:{p1}"),
        &format!("--listen=127.0.0.1:{p2}"),
        "--fdname=dns:syslog",
        &format!("--setenv=REPORT={}", tmp.path("report").display()),
        bin(),
        &format!("--port=127.0.0.1:u{p1}"),
        "--",
        &tmp.report_worker().display().to_string(),
    ]);
    let server = Server::spawn(command, &[]);
    // A datagram is what makes systemd-socket-activate start its command.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let report = wait_until("the worker's report", || {
        let _ = sender.send_to(b"hello", ("127.0.0.1", p1));
        std::thread::sleep(std::time::Duration::from_millis(50));
        fs::read_to_string(tmp.path("report")).ok()
    });
    // --port=...:uP1 took the inherited UDP socket (key as written, without the u); the other
    // inherited one follows, keyed by its address.
    assert_eq!(
        env_value(&report, "SERVER_STARTER_PORT"),
        Some(format!("127.0.0.1:{p1}=3;127.0.0.1:{p2}=4"))
    );
    assert_eq!(
        report.matches("\"type\": \"SOCK_DGRAM\"").count(),
        2,
        "{report}"
    );
    assert_eq!(
        env_value(&report, "LISTEN_FDNAMES").as_deref(),
        Some("dns:syslog")
    );
    assert!(
        server
            .log()
            .contains(&format!("using socket 127.0.0.1:{p2} (syslog)"))
    );
}
