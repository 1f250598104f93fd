//! Bad input: one clear line on stderr, a non-zero exit (2 for usage, 1 for what the OS
//! refused), no panic, and nothing left behind.

mod common;

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use common::*;

/// Runs start_server and checks it failed with `code` and a message containing `expected`.
fn fails(options: &[String], code: i32, expected: &str) -> String {
    let (status, log) = run(options);
    assert_eq!(
        status.code(),
        Some(code),
        "exit status for {options:?}: {log}"
    );
    assert!(
        log.contains(expected),
        "{options:?}: expected {expected:?} in {log:?}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // One style for every error, clap's included: `start_server: <what went wrong>: <what to do>`.
    let error = log
        .lines()
        .find(|l| l.contains(expected))
        .unwrap_or_default();
    assert!(
        error.starts_with("start_server: ") && error.matches(": ").count() >= 2,
        "{options:?}: not in the common style: {error:?}"
    );
    log
}

fn with_program(options: &[&str]) -> Vec<String> {
    let mut a = args(options);
    a.extend(args(&["--", "/bin/sleep", "600"]));
    a
}

#[test]
fn malformed_ports() {
    for bad in [
        "abc",
        "80x",
        "70000",
        "host:",
        ":80",
        "[::1]80",
        "80=x",
        "[::zz]:80",
        "[]:80",
        "uu5",
    ] {
        let log = fails(
            &with_program(&[&format!("--port={bad}")]),
            2,
            "invalid --port value",
        );
        assert_eq!(log.lines().count(), 1, "one line: {log}");
    }
}

#[test]
fn unresolvable_host() {
    fails(
        &with_program(&["--port=no-such-host.invalid:8080"]),
        1,
        "failed to resolve host \"no-such-host.invalid\"",
    );
    // Brackets around a host name, as the original takes them.
    fails(
        &with_program(&["--port=[no-such-host.invalid]:8080"]),
        1,
        "failed to resolve host \"no-such-host.invalid\"",
    );
}

#[test]
fn address_in_use_leaves_nothing_behind() {
    let tmp = TempDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    fails(
        &with_program(&[
            &format!("--port=127.0.0.1:{}", free_port()),
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--pid-file", "pid"),
            &tmp.arg("--status-file", "status"),
        ]),
        1,
        &format!("failed to bind to 127.0.0.1:{port}: Address already in use"),
    );
    assert!(!tmp.path("pid").exists());
    assert!(!tmp.path("status").exists());
}

#[test]
fn a_failing_path_removes_the_socket_files_already_made() {
    let tmp = TempDir::new();
    fails(
        &with_program(&[
            &tmp.arg("--path", "first.sock"),
            &tmp.arg("--path", "missing-dir/second.sock"),
        ]),
        1,
        "failed to listen to file",
    );
    assert!(!tmp.path("first.sock").exists());
}

#[test]
fn a_regular_file_at_path_is_not_removed() {
    let tmp = TempDir::new();
    fs::write(tmp.path("data"), "precious").unwrap();
    fails(
        &with_program(&[&tmp.arg("--path", "data")]),
        1,
        "it exists and is not a socket",
    );
    assert_eq!(fs::read_to_string(tmp.path("data")).unwrap(), "precious");
}

#[test]
fn a_live_socket_at_path_is_not_stolen() {
    let tmp = TempDir::new();
    let _live = std::os::unix::net::UnixListener::bind(tmp.path("live.sock")).unwrap();
    fails(
        &with_program(&[&tmp.arg("--path", "live.sock")]),
        1,
        "another process is listening on it",
    );
    assert!(tmp.path("live.sock").exists());
}

#[test]
fn a_stale_socket_file_is_replaced_with_a_warning() {
    let tmp = TempDir::new();
    drop(std::os::unix::net::UnixListener::bind(tmp.path("stale.sock")).unwrap());
    let server = Server::start(
        &with_program(&[
            &tmp.arg("--path", "stale.sock"),
            &tmp.arg("--status-file", "st"),
        ]),
        &[],
    );
    server.wait_log(&format!(
        "removing existing socket file:{}",
        tmp.path("stale.sock").display()
    ));
    wait_sole_generation(&tmp.path("st"), 1);
    std::os::unix::net::UnixStream::connect(tmp.path("stale.sock")).expect("listening again");
}

#[test]
fn low_port_without_privilege() {
    // As root, drop to nobody for this one run; as another user, run directly.
    let tmp = TempDir::new();
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        c
    } else {
        Command::new(bin())
    };
    command.args(with_program(&[
        "--port=127.0.0.1:1",
        &tmp.arg("--pid-file", "pid"),
    ]));
    let mut server = Server::spawn(command, &[]);
    let status = server.wait_exit();
    let log = server.log();
    // The pid file cannot be written by nobody either; both are permission errors.
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("Permission denied"), "{log}");
    // SAFETY: geteuid has no preconditions.
    let mut command = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()]);
        c
    } else {
        Command::new(bin())
    };
    command.args(with_program(&["--port=127.0.0.1:1"]));
    let mut server = Server::spawn(command, &[]);
    assert_eq!(server.wait_exit().code(), Some(1));
    assert!(
        server.log().contains(
            "failed to bind to 127.0.0.1:1: Permission denied: ports below 1024 need root"
        ),
        "{}",
        server.log()
    );
}

#[test]
fn unknown_signal_names() {
    fails(
        &with_program(&["--signal-on-hup=FOO"]),
        2,
        "--signal-on-hup: unknown signal \"FOO\"",
    );
    fails(
        &with_program(&["--signal-on-term=SIGNOPE"]),
        2,
        "--signal-on-term: unknown signal",
    );
}

#[test]
fn missing_or_unusable_program() {
    fails(&args(&["--port=0"]), 2, "server program not specified");
    fails(
        &args(&["--", "no-such-program-anywhere"]),
        2,
        "server program no-such-program-anywhere not found in PATH",
    );
    fails(&args(&["--", "/etc/passwd"]), 2, "is not executable");
    fails(
        &args(&["--", "./nope"]),
        2,
        "server program ./nope does not exist",
    );
}

#[test]
fn option_combinations() {
    fails(
        &with_program(&["--daemonize"]),
        2,
        "--daemonize needs --log-file",
    );
    fails(
        &args(&["--restart", "--pid-file=/tmp/x"]),
        2,
        "--restart needs --pid-file and --status-file",
    );
    fails(&args(&["--stop"]), 2, "--stop needs --pid-file");
    fails(
        &with_program(&["--interval=soon"]),
        2,
        "is not a number of seconds",
    );
    // Past the longest duration: refused, not a panic when added to the clock later.
    for option in [
        "--interval=1e19",
        "--kill-old-delay=1e19",
        "--shutdown-delay=5e9",
    ] {
        fails(&with_program(&[option]), 2, "is not a number of seconds");
    }
    fails(&with_program(&["--backlog=0"]), 2, "--backlog");
    fails(
        &with_program(&["--no-such-option"]),
        2,
        "Unknown option: no-such-option",
    );
}

#[test]
fn two_sockets_on_one_fd() {
    fails(
        &with_program(&[
            &format!("--port=127.0.0.1:{}=5", free_port()),
            &format!("--port=127.0.0.1:{}=5", free_port()),
        ]),
        2,
        "both ask for file descriptor 5",
    );
}

#[test]
fn missing_directories() {
    fails(
        &with_program(&["--dir=/no/such/dir"]),
        2,
        "--dir /no/such/dir: no such directory: create it",
    );
    fails(
        &with_program(&["--envdir=/no/such/envdir"]),
        2,
        "--envdir /no/such/envdir: cannot read it",
    );
}

#[test]
fn unwritable_pid_file_leaves_no_socket_file() {
    let tmp = TempDir::new();
    fails(
        &with_program(&[
            &tmp.arg("--path", "s.sock"),
            "--pid-file=/no/such/dir/app.pid",
        ]),
        1,
        "failed to open pid file /no/such/dir/app.pid",
    );
    assert!(!tmp.path("s.sock").exists());
}

#[test]
fn a_second_start_server_on_the_same_pid_file_is_refused() {
    let tmp = TempDir::new();
    let first = Server::start(
        &with_program(&[
            &tmp.arg("--pid-file", "pid"),
            &tmp.arg("--status-file", "st"),
        ]),
        &[],
    );
    wait_sole_generation(&tmp.path("st"), 1);
    fails(
        &with_program(&[&tmp.arg("--pid-file", "pid")]),
        1,
        &format!("is locked by a running start_server (pid {})", first.pid()),
    );
    assert_eq!(
        fs::read_to_string(tmp.path("pid")).unwrap(),
        format!("{}\n", first.pid()),
        "the running one's pid file is untouched"
    );
}

#[test]
fn clients_refuse_a_stale_pid_file() {
    let tmp = TempDir::new();
    // A pid that is certainly not a start_server holding the lock: our own.
    fs::write(tmp.path("pid"), format!("{}\n", std::process::id())).unwrap();
    fs::write(tmp.path("status"), "1:1\n").unwrap();
    fails(
        &args(&["--stop", &tmp.arg("--pid-file", "pid")]),
        1,
        "no start_server is running with pid file",
    );
    fails(
        &args(&[
            "--restart",
            &tmp.arg("--pid-file", "pid"),
            &tmp.arg("--status-file", "status"),
        ]),
        1,
        "remove the stale file",
    );
    fails(
        &args(&["--stop", &tmp.arg("--pid-file", "absent")]),
        1,
        "it does not exist: is start_server running with --pid-file=",
    );
}

/// Every value below, for every option, ends in a clean exit: a usage error (2), a runtime
/// error (1), or, when the value happens to be valid, a normal run that the worker ends at once
/// by sending TERM to start_server (0). Never a panic (101) or a death by signal.
#[test]
fn no_input_makes_it_panic() {
    let mut seed: u64 = 0x5eed_1234_abcd_9876;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let pieces = [
        "0",
        "1",
        "9",
        "65535",
        "65536",
        "2147483647",
        "99999999999",
        ":",
        "[",
        "]",
        "::1",
        "=",
        "u",
        ".",
        "a",
        "localhost",
        "127.0.0.1",
        "-",
        " ",
        "%",
        "/",
        "\\",
        "é",
    ];
    let options = [
        "--port",
        "--port",
        "--port",
        "--backlog",
        "--interval",
        "--signal-on-hup",
        "--signal-on-term",
        "--kill-old-delay",
        "--auto-restart-interval",
        "--ready-timeout",
        "--kill-old-timeout",
        "--max-restart-delay",
        "--path",
    ];
    let tmp = TempDir::new();
    let stopper = tmp.script("stop.sh", "#!/bin/sh\nkill -TERM $PPID\nexec sleep 5\n");
    for case in 0..150 {
        let option = options[next(options.len())];
        let value: String = (0..1 + next(5))
            .map(|_| pieces[next(pieces.len())])
            .collect();
        let value = if option == "--path" {
            tmp.path(&format!("s{case}-{value}")).display().to_string()
        } else {
            value
        };
        let mut a = vec![format!("{option}={value}")];
        if option != "--port" {
            a.push("--port=127.0.0.1:0".into());
        }
        a.extend(args(&[
            "--interval=0",
            "--",
            &stopper.display().to_string(),
        ]));
        let (status, log) = run(&a);
        assert!(
            matches!(status.code(), Some(0..=2)) && !log.contains("panicked"),
            "{a:?} ended with {status:?}: {log}"
        );
    }
}

#[test]
fn unknown_and_ambiguous_options_are_reported_wherever_they_stand() {
    let port = format!("--port=127.0.0.1:{}", free_port());
    for placement in [
        args(&["--bogus", "--", "/bin/sleep", "600"]),
        args(&["--bogus", "/bin/sleep", "600"]),
        args(&[&port, "--bogus=1", "/bin/sleep", "600"]),
        args(&["-bogus", "--interval", "1", "--", "/bin/sleep", "600"]),
        args(&["--interval=1", &port, "--bogus", "--", "/bin/sleep", "600"]),
    ] {
        let log = fails(&placement, 2, "Unknown option: bogus");
        assert!(log.contains("Usage: start_server"), "{log}");
        assert!(log.contains("--help"), "{log}");
        assert!(
            !log.contains("starting new worker"),
            "nothing started: {log}"
        );
    }
    for placement in [
        args(&["--p=80", "--", "/bin/sleep", "600"]),
        args(&["--interval=1", "-p", "80", "/bin/sleep", "600"]),
    ] {
        let log = fails(
            &placement,
            2,
            "Option p is ambiguous (path, pid-file, port)",
        );
        assert!(log.contains("Usage: start_server"), "{log}");
    }
    // The program's own options are never ours to judge.
    let tmp = TempDir::new();
    let worker = tmp.script("w.sh", SLEEPER);
    let server = tmp.start_server(
        &["--interval=0.1"],
        &[&worker.display().to_string(), "--bogus"],
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    drop(server);
}

#[test]
fn ready_and_bake_take_only_their_values() {
    fails(
        &with_program(&["--ready=accept"]),
        2,
        "invalid value 'accept' for '--ready <HOW>' (one of notify, listening)",
    );
    fails(
        &with_program(&["--bake=soon"]),
        2,
        "is not a number of seconds",
    );
    fails(
        &with_program(&["--bake=1e19"]),
        2,
        "is not a number of seconds",
    );
}
