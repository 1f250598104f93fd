//! What a worker gets: SERVER_STARTER_PORT and SERVER_STARTER_GENERATION in the original's
//! format, its sockets at those fds, the envdir's variables, its directory, and nothing else
//! (no stray fds, an empty signal mask, no ignored signal the caller did not ignore).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;

use common::*;

#[test]
fn every_address_form_is_described_like_the_original() {
    let tmp = TempDir::new();
    let p: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let sock = tmp.path("app.sock");
    let (_server, report) = report(
        &tmp,
        &[
            format!("--port={}", p[0]),
            format!("--port=127.0.0.1:{}", p[1]),
            format!("--port=[::1]:{}", p[2]),
            format!("--port=localhost:{}", p[3]),
            format!("--port=u{}", p[4]),
            format!("--port=127.0.0.1:u{}=9", p[5]),
            format!("--path={}", sock.display()),
        ],
    );
    let expected = format!(
        "{}=3;127.0.0.1:{}=4;[::1]:{}=5;localhost:{}=6;{}=7;127.0.0.1:{}=9;{}=8",
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        sock.display()
    );
    assert_eq!(
        report.env("SERVER_STARTER_PORT").as_deref(),
        Some(&*expected)
    );
    assert_eq!(
        report.env("SERVER_STARTER_GENERATION").as_deref(),
        Some("1")
    );
    let check = |key: String, family: &str, kind: &str| {
        assert_eq!(
            report.socket(&key, "family").as_deref(),
            Some(family),
            "{key}"
        );
        assert_eq!(report.socket(&key, "type").as_deref(), Some(kind), "{key}");
    };
    check(p[0].to_string(), "AF_INET", "SOCK_STREAM");
    check(format!("127.0.0.1:{}", p[1]), "AF_INET", "SOCK_STREAM");
    check(format!("[::1]:{}", p[2]), "AF_INET6", "SOCK_STREAM");
    check(format!("localhost:{}", p[3]), "AF_INET", "SOCK_STREAM");
    check(p[4].to_string(), "AF_INET", "SOCK_DGRAM");
    check(format!("127.0.0.1:{}", p[5]), "AF_INET", "SOCK_DGRAM");
    check(sock.display().to_string(), "AF_UNIX", "SOCK_STREAM");
    // A bare port is IPv4 0.0.0.0, and the unix socket file is world-connectable (umask 0).
    assert!(
        report
            .text
            .contains(&format!("\"name\": \"('0.0.0.0', {})\"", p[0]))
    );
    let mode = fs::metadata(&sock).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o777);
}

#[test]
fn ipv6_sockets_are_v6_only() {
    let tmp = TempDir::new();
    let port = free_port();
    let (_server, _report) = report(&tmp, &[format!("--port=[::]:{port}")]);
    // With IPV6_V6ONLY the IPv4 wildcard of the same port is still free.
    std::net::TcpListener::bind(("0.0.0.0", port)).expect("IPv4 side stays free");
}

#[test]
fn without_sockets_the_variable_is_empty() {
    let tmp = TempDir::new();
    let (_server, report) = report(&tmp, &[]);
    // The original sets it to the empty string; its server_ports() dies when it is missing.
    assert_eq!(report.env("SERVER_STARTER_PORT").as_deref(), Some(""));
    assert_eq!(
        report.env("SERVER_STARTER_GENERATION").as_deref(),
        Some("1")
    );
}

#[test]
fn the_workers_environment_is_start_servers_minus_what_described_start_server() {
    let tmp = TempDir::new();
    // The worker is exec'd directly (no shell or interpreter to add variables of its own).
    let worker = "/bin/sleep";
    let port = free_port();
    // What systemd (or a stale environment) set for start_server itself.
    let own: Vec<(&str, String)> = vec![
        ("APP_SETTING", "kept".into()),
        ("SERVER_STARTER_PORT", "9999=7".into()),
        ("LISTEN_FDS", "1".into()),
        ("LISTEN_PID", "1".into()),
        ("LISTEN_FDNAMES", "other".into()),
        ("LISTEN_PIDFDID", "12345".into()),
        ("NOTIFY_SOCKET", "@not-for-workers".into()),
        ("WATCHDOG_USEC", "1000000".into()),
        ("WATCHDOG_PID", "1".into()),
        ("FDSTORE", "16".into()),
        ("SYSTEMD_EXEC_PID", "1".into()),
    ];
    let _server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--",
            worker,
            "600",
        ]),
        &own,
    );
    let (_, pid) = wait_sole_generation(&tmp.path("status"), 1);
    let got = environ(pid);
    let dropped = [
        "SERVER_STARTER_PORT",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "LISTEN_PIDFDID",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "FDSTORE",
        "SYSTEMD_EXEC_PID",
    ];
    let mut expected: BTreeSet<String> = std::env::vars()
        .chain(own.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .filter(|(k, _)| !dropped.contains(&k.as_str()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    expected.extend([
        format!("SERVER_STARTER_PORT=127.0.0.1:{port}=3"),
        "SERVER_STARTER_GENERATION=1".to_string(),
        "LISTEN_FDS=1".to_string(),
        format!("LISTEN_PID={pid}"),
        format!("LISTEN_FDNAMES=127.0.0.1_{port}"),
    ]);
    let notify = got
        .iter()
        .find(|e| e.starts_with("NOTIFY_SOCKET=@start_server/"))
        .cloned()
        .expect("start_server's own NOTIFY_SOCKET");
    expected.insert(notify);
    assert_eq!(got, expected);
}

#[test]
fn brackets_around_an_ipv4_host_are_taken_as_the_original_does() {
    let tmp = TempDir::new();
    let port = free_port();
    let (_server, report) = report(&tmp, &[format!("--port=[127.0.0.1]:{port}")]);
    let key = format!("127.0.0.1:{port}");
    assert_eq!(report.env("SERVER_STARTER_PORT"), Some(format!("{key}=3")));
    assert_eq!(report.socket(&key, "family").as_deref(), Some("AF_INET"));
}

#[test]
fn an_empty_envdir_file_unsets_and_a_removed_one_gives_the_own_value_back() {
    let tmp = TempDir::new();
    let envdir = tmp.path("env");
    fs::create_dir(&envdir).unwrap();
    fs::write(envdir.join("MODE"), "from-envdir\n").unwrap();
    let worker = tmp.script(
        "env.sh",
        "#!/bin/sh\necho \"$SERVER_STARTER_GENERATION ${MODE-unset}\" >> \"$OUT\"\nexec sleep 600\n",
    );
    let server = Server::start(
        &args(&[
            &format!("--envdir={}", envdir.display()),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--",
            &worker.display().to_string(),
        ]),
        &[
            ("OUT", tmp.path("out").display().to_string()),
            ("MODE", "own".into()),
        ],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    fs::write(envdir.join("MODE"), "").unwrap();
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    fs::remove_file(envdir.join("MODE")).unwrap();
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 3);
    assert_eq!(
        fs::read_to_string(tmp.path("out")).unwrap(),
        "1 from-envdir\n2 unset\n3 own\n",
        "daemontools' rule: an empty file unsets; a removed file no longer applies"
    );
}

fn ignored(pid: i32) -> u64 {
    u64::from_str_radix(&proc_status_field(pid, "SigIgn"), 16).expect("hex mask")
}

const PIPE: u64 = 1 << (libc::SIGPIPE - 1);
const XFSZ: u64 = 1 << (libc::SIGXFSZ - 1);

/// What start_server was given to ignore by its caller (who ignores neither SIGPIPE nor
/// SIGXFSZ here): its own ignored set without those two, which start_server ignores for itself.
/// Workers must get exactly that.
fn given_to(server: i32) -> u64 {
    ignored(server) & !(PIPE | XFSZ)
}

/// A worker that is a plain `sleep` (which changes nothing about its own fds or signals).
fn sleeper(tmp: &TempDir) -> std::path::PathBuf {
    tmp.script("sleeper.sh", SLEEPER)
}

#[test]
fn workers_get_only_stdio_and_their_sockets_and_a_clean_signal_state() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    // A stray descriptor the caller leaks to start_server must not reach the worker.
    let mut command = Command::new("/bin/sh");
    command.args([
        "-c",
        r#"exec 7</dev/null; exec "$@""#,
        "sh",
        bin(),
        &format!("--port=127.0.0.1:{p1}"),
        &format!("--port=127.0.0.1:u{p2}=5"),
        &tmp.arg("--path", "s.sock"),
        &tmp.arg("--status-file", "status"),
        &tmp.arg("--pid-file", "pid"),
        "--interval=0.1",
        "--",
        &sleeper(&tmp).display().to_string(),
    ]);
    let server = Server::spawn(command, &[]);
    let (_, worker) = wait_sole_generation(&tmp.path("status"), 1);
    assert!(
        open_fds(server.pid()).contains(&7),
        "start_server did inherit fd 7"
    );
    assert_eq!(
        open_fds(worker),
        BTreeSet::from([0, 1, 2, 3, 4, 5]),
        "stdio, the TCP socket at 3, the unix socket at 4, the UDP socket at 5"
    );
    assert_eq!(proc_status_field(worker, "SigBlk"), "0000000000000000");
    assert_eq!(ignored(worker), given_to(server.pid()));
    assert_eq!(ignored(worker) & PIPE, 0);
    assert_eq!(ignored(worker) & XFSZ, 0, "SIGXFSZ is at its default again");
    let environ = fs::read(format!("/proc/{worker}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let vars: Vec<&str> = environ.split('\0').collect();
    assert!(vars.contains(&"LISTEN_FDS=3"), "{vars:?}");
    assert!(
        vars.contains(&format!("LISTEN_PID={worker}").as_str()),
        "{vars:?}"
    );
    let path_name = tmp.path("s.sock").display().to_string();
    let names = format!("LISTEN_FDNAMES=127.0.0.1_{p1}:{path_name}:127.0.0.1_{p2}");
    assert!(vars.contains(&names.as_str()), "in fd order: {vars:?}");
}

#[test]
fn signals_the_caller_ignored_stay_ignored() {
    let tmp = TempDir::new();
    let mut command = Command::new("/bin/sh");
    command.args([
        "-c",
        r#"trap "" USR2; exec "$@""#,
        "sh",
        bin(),
        &tmp.arg("--status-file", "status"),
        "--interval=0.1",
        "--",
        &sleeper(&tmp).display().to_string(),
    ]);
    let server = Server::spawn(command, &[]);
    let (_, worker) = wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(
        ignored(worker) & 1 << (libc::SIGUSR2 - 1),
        1 << (libc::SIGUSR2 - 1)
    );
    assert_eq!(ignored(worker), given_to(server.pid()));
}

#[test]
fn a_socket_can_be_placed_at_fd_zero() {
    let tmp = TempDir::new();
    let port = free_port();
    let (_server, report) = report(&tmp, &[format!("--port=127.0.0.1:{port}=0")]);
    assert_eq!(
        report.env("SERVER_STARTER_PORT"),
        Some(format!("127.0.0.1:{port}=0"))
    );
    let target = fs::read_link(format!("/proc/{}/fd/0", report.pid())).unwrap();
    assert!(
        target.to_string_lossy().starts_with("socket:"),
        "{target:?}"
    );
}

#[test]
fn dir_sets_the_workers_directory() {
    let tmp = TempDir::new();
    let workdir = tmp.path("work");
    fs::create_dir(&workdir).unwrap();
    let (_server, report) = report(&tmp, &[format!("--dir={}", workdir.display())]);
    assert_eq!(
        fs::read_link(format!("/proc/{}/cwd", report.pid())).unwrap(),
        workdir
    );
}

#[test]
fn envdir_is_applied_and_reread_at_every_restart() {
    let tmp = TempDir::new();
    let envdir = tmp.path("env");
    fs::create_dir(&envdir).unwrap();
    fs::write(envdir.join("GREETING"), "hello\nsecond line ignored\n").unwrap();
    fs::write(envdir.join("DOOMED"), "here").unwrap();
    fs::write(envdir.join(".hidden"), "no").unwrap();
    let worker = tmp.script(
        "env.sh",
        "#!/bin/sh\necho \"$SERVER_STARTER_GENERATION ${GREETING-unset} ${DOOMED-unset} ${ENVDIR}\" >> \"$OUT\"\nexec sleep 600\n",
    );
    let server = Server::start(
        &args(&[
            &format!("--envdir={}", envdir.display()),
            &tmp.arg("--status-file", "status"),
            "--interval=0.1",
            "--",
            &worker.display().to_string(),
        ]),
        &[("OUT", tmp.path("out").display().to_string())],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    fs::write(envdir.join("GREETING"), "bonjour").unwrap();
    fs::remove_file(envdir.join("DOOMED")).unwrap();
    fs::write(envdir.join("KILL_OLD_DELAY"), "0.2").unwrap();
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    let out = fs::read_to_string(tmp.path("out")).unwrap();
    let d = envdir.display();
    assert_eq!(
        out,
        format!("1 hello here {d}\n2 bonjour unset {d}\n"),
        "the envdir is re-read, a removed file unsets its variable"
    );
    // KILL_OLD_DELAY from the envdir governs the restart it was read for.
    server.wait_log("sleeping 0.2 secs before killing old workers");
}

#[test]
fn envdir_from_the_environment() {
    let tmp = TempDir::new();
    let envdir = tmp.path("env");
    fs::create_dir(&envdir).unwrap();
    fs::write(envdir.join("FROM_ENVDIR"), "yes").unwrap();
    let worker = tmp.report_worker();
    let _server = Server::start(
        &args(&["--", &worker.display().to_string()]),
        &[
            ("ENVDIR", envdir.display().to_string()),
            ("REPORT", tmp.path("report").display().to_string()),
        ],
    );
    let text = tmp.wait_report();
    assert!(text.contains("\"FROM_ENVDIR\": \"yes\""), "{text}");
}

#[test]
fn generation_counts_every_spawn_attempt() {
    let tmp = TempDir::new();
    // Fails twice, then stays up: generations 1 and 2 are used up by the failures.
    let worker = tmp.script(
        "flaky.sh",
        "#!/bin/sh\necho \"$SERVER_STARTER_GENERATION\" >> \"$OUT\"\n[ \"$SERVER_STARTER_GENERATION\" -ge 3 ] || exit 1\nexec sleep 600\n",
    );
    let server = tmp.start_server(
        &["--interval=0.1"],
        &[&worker.display().to_string()],
        &[("OUT", tmp.path("out").display().to_string())],
    );
    let (generation, _) = wait_sole_generation(&tmp.path("status"), 3);
    assert_eq!(generation, 3);
    assert_eq!(fs::read_to_string(tmp.path("out")).unwrap(), "1\n2\n3\n");
    let log = server.log();
    assert_eq!(
        log.matches("seems to have failed to start, exit status:256 (exit code 1)")
            .count(),
        2
    );
}

#[test]
fn listen_fds_are_left_out_when_the_layout_cannot_follow_systemd() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    // fd 9 leaves a gap after 3: LISTEN_FDS needs 3, 4, ...
    let (server, report) = report(
        &tmp,
        &[
            format!("--port=127.0.0.1:{p1}"),
            format!("--port=127.0.0.1:{p2}=9"),
        ],
    );
    assert_eq!(
        report.env("SERVER_STARTER_PORT"),
        Some(format!("127.0.0.1:{p1}=3;127.0.0.1:{p2}=9"))
    );
    assert_eq!(report.env("LISTEN_FDS"), None);
    assert_eq!(report.env("LISTEN_PID"), None);
    let notice = "sockets are not at fds 3..4 (--port=...=FD): workers get SERVER_STARTER_PORT \
                  only, not LISTEN_FDS";
    assert_eq!(server.log().matches(notice).count(), 1, "{}", server.log());
}

#[test]
fn no_listen_fds_turns_them_off() {
    let tmp = TempDir::new();
    let (_server, report) = report(
        &tmp,
        &[
            format!("--port=127.0.0.1:{}", free_port()),
            "--no-listen-fds".into(),
        ],
    );
    assert!(report.env("SERVER_STARTER_PORT").is_some());
    assert_eq!(report.env("LISTEN_FDS"), None);
    assert_eq!(report.env("LISTEN_FDNAMES"), None);
    assert_eq!(report.env("LISTEN_PID"), None);
}

#[test]
fn an_explicit_layout_that_fits_keeps_listen_fds() {
    let tmp = TempDir::new();
    let (p1, p2) = (free_port(), free_port());
    // Reversed but still 3 and 4: LISTEN_FDNAMES lists them in fd order.
    let (_server, report) = report(
        &tmp,
        &[
            format!("--port=127.0.0.1:{p1}=4"),
            format!("--port=127.0.0.1:{p2}=3"),
        ],
    );
    assert_eq!(report.env("LISTEN_FDS").as_deref(), Some("2"));
    assert_eq!(
        report.env("LISTEN_FDNAMES"),
        Some(format!("127.0.0.1_{p2}:127.0.0.1_{p1}"))
    );
    assert_eq!(report.env("LISTEN_PID"), Some(report.pid().to_string()));
}
