//! Another local user against start_server run by root: `nobody` (uid 65534, through setpriv)
//! plants what root's start_server might trust. A pid file naming a root process, a
//! `start_server` in a shared working directory, a binary others may write, a squatted control
//! socket; and the failures an attacker (or a bad package) can cause: an upgrade check that
//! would freeze the event loop, a new image that fails after the exec, files start_server did
//! not create, inherited variables, escape sequences in a worker's STATUS=, options that cannot
//! work. Each test asserts the effect first (who was signalled, what ran, what is left, who
//! serves), and the message only where an operator relies on it.

mod common;

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use common::*;
use serde_json::Value;

/// A root process the test starts, which no client may signal: it blocks every signal it can,
/// so that one sent to it stays pending, where /proc shows it.
// The system's Python itself, not `env python3`: a version manager's shim (a shell script) would
// run first under the same pid, and a signal sent while it runs would kill it.
const VICTIM: &str = "#!/usr/bin/python3
import signal, time
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
time.sleep(600)
";

/// nobody's server on a squatted control socket: every line gets one forged reply (a reload
/// that went well, an upgrade to 9.9.9, a healthy status), whatever was asked.
const FORGER: &str = r#"import json, socket, sys, threading
status = {"pid": 1, "version": "9.9.9", "started_unix": 0.0, "uptime": 1.0, "sockets": [],
          "generations": [{"number": 42, "state": "up", "since_unix": 0.0, "since_ago": 1.0}],
          "workers": [], "last_reload": None, "backoff": None, "crash_loop": False,
          "stopping": False, "workers_signalled_in": None, "log_lines_dropped": 0}
reply = (json.dumps({"ok": True, "generation": 42, "version": "9.9.9", "status": status})
         + "\n").encode()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(64)
def answer(conn):
    with conn, conn.makefile("rb") as lines:
        for _ in lines:
            conn.sendall(reply)
while True:
    conn, _ = server.accept()
    threading.Thread(target=answer, args=(conn,), daemon=True).start()
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `start_server ARGS` run by root as a client, bounded.
fn client(options: &[String]) -> Output {
    output_within(start_server_command().args(options))
}

/// Runs `sh -c SCRIPT sh ARGS...` as nobody; it must succeed.
fn as_nobody(script: &str, args: &[&Path]) {
    let out = output_within(
        as_user(NOBODY, "/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args),
    );
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        text(&out.stderr)
    );
}

/// Whether `sh -c SCRIPT sh ARGS...` run as nobody succeeds.
fn nobody_can(script: &str, args: &[&Path]) -> bool {
    output_within(
        as_user(NOBODY, "/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args),
    )
    .status
    .success()
}

/// Signals pending for `pid` (its own and its process's), as a mask; all ones once it is gone.
fn pending_signals(pid: i32) -> u64 {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return u64::MAX;
    };
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .map(|mask| u64::from_str_radix(mask.trim(), 16).expect("a hex mask"))
        .fold(0, |all, mask| all | mask)
}

/// Starts [`VICTIM`] as root; returns it once it blocks its signals.
fn victim(tmp: &TempDir) -> Server {
    let victim = Server::spawn(Command::new(tmp.script("victim.py", VICTIM)), &[]);
    let pid = victim.pid();
    wait_until("the victim to block its signals", || {
        // SIGHUP (bit 0) and SIGTERM (bit 14) both blocked: the script's own mask, no other's.
        let hup_and_term = (1u64 << 0) | (1 << 14);
        let blocked = u64::from_str_radix(&proc_status_field(pid, "SigBlk"), 16).ok()?;
        (alive(pid) && blocked & hup_and_term == hup_and_term).then_some(())
    });
    victim
}

/// Whether another process holds a lock on `path` (`flock`, as start_server's pid file lock).
fn locked_by_another(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor this function owns; closing it releases our lock.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !taken && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// nobody's pid file `shared/app.pid` in a sticky world-writable directory (as /tmp): it names
/// `pid`, and nobody holds its lock (as a running start_server would). Returns the file and
/// the lock holder.
fn planted_pid_file(tmp: &TempDir, pid: i32) -> (PathBuf, Server) {
    let shared = tmp.dir("shared", 0o1777);
    let file = shared.join("app.pid");
    let mut command = as_user(NOBODY, "/bin/sh");
    command
        .arg("-c")
        .arg("echo \"$1\" > \"$2\" && exec flock -n \"$2\" sleep 600")
        .arg("sh")
        .arg(pid.to_string())
        .arg(&file);
    let holder = Server::spawn(command, &[]);
    wait_until("nobody's lock on the planted pid file", || {
        locked_by_another(&file).then_some(())
    });
    assert_eq!(owner(&file), NOBODY);
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), pid.to_string());
    (file, holder)
}

/// Root's client `options` (naming nobody's pid file) exits non-zero, and the victim got no
/// signal and lives.
fn signals_no_one(options: &[String], victim: &Server) {
    let pid = victim.pid();
    let mut command = start_server_command();
    command.args(options);
    let mut client = Server::spawn(command, &[]);
    // Today's client signals, then waits for the victim (or the lock) for ever.
    wait_until("the client to exit or signal the victim", || {
        (client.child.try_wait().ok().flatten().is_some() || pending_signals(pid) != 0)
            .then_some(())
    });
    assert_eq!(
        pending_signals(pid),
        0,
        "root's {options:?} signalled pid {pid}, named by nobody's pid file:\n{}",
        client.log()
    );
    let status = client.wait_exit();
    assert!(alive(pid));
    assert!(
        !status.success(),
        "{options:?} succeeded without signalling:\n{}",
        client.log()
    );
}

#[test]
fn stop_refuses_a_pid_file_another_user_planted_and_locked() {
    assert_root();
    let tmp = TempDir::new();
    let victim = victim(&tmp);
    let (file, _holder) = planted_pid_file(&tmp, victim.pid());
    signals_no_one(
        &["--stop".into(), format!("--pid-file={}", file.display())],
        &victim,
    );
}

#[test]
fn restart_refuses_a_pid_file_another_user_planted_and_locked() {
    assert_root();
    let tmp = TempDir::new();
    let victim = victim(&tmp);
    let (file, _holder) = planted_pid_file(&tmp, victim.pid());
    // A status file nobody wrote (root's, in a directory only root may write), listing the
    // victim as a generation: only the pid file is nobody's.
    fs::write(tmp.path("status"), format!("1:{}\n", victim.pid())).unwrap();
    signals_no_one(
        &[
            "--restart".into(),
            format!("--pid-file={}", file.display()),
            tmp.arg("--status-file", "status"),
        ],
        &victim,
    );
}

#[test]
fn upgrade_refuses_a_pid_file_another_user_planted_and_locked() {
    assert_root();
    let tmp = TempDir::new();
    let victim = victim(&tmp);
    let (file, _holder) = planted_pid_file(&tmp, victim.pid());
    signals_no_one(
        &["--upgrade".into(), format!("--pid-file={}", file.display())],
        &victim,
    );
}

/// start_server installed as `tmp/<dir>/start_server` (root's, 0755), running with its pid
/// file in `tmp/run` (root's, 0755) and the HTTP worker (which says READY=1) on a free port.
struct Installed {
    server: Server,
    binary: PathBuf,
    pid_file: PathBuf,
    addr: String,
}

impl Installed {
    /// Installs a copy of the binary under test at `tmp/<dir>/start_server`.
    fn binary(tmp: &TempDir, dir: &str) -> PathBuf {
        let binary = tmp.dir(dir, 0o755).join("start_server");
        install(&binary, &fs::read(bin()).unwrap());
        binary
    }

    /// Starts `command` (the installed binary, set up by the caller) with the usual options.
    fn start(tmp: &TempDir, binary: PathBuf, mut command: Command) -> Installed {
        let pid_file = tmp.dir("run", 0o755).join("app.pid");
        let (addr, port) = port_options();
        command
            .args(port)
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(tmp.arg("--status-file", "status"))
            .arg("--")
            .arg(tmp.http_worker());
        let server = Server::spawn(command, &[("SEND_READY", "1".into())]);
        wait_sole_generation(&tmp.path("status"), 1);
        served_by(&addr);
        Installed {
            server,
            binary,
            pid_file,
            addr,
        }
    }

    /// Installed at `tmp/<dir>/start_server` and started from there.
    fn run(tmp: &TempDir, dir: &str) -> Installed {
        let binary = Self::binary(tmp, dir);
        let command = Command::new(&binary);
        Self::start(tmp, binary, command)
    }

    fn pid(&self) -> i32 {
        self.server.pid()
    }

    fn control(&self) -> String {
        format!("--control={}.control", self.pid_file.display())
    }

    /// Root's `--upgrade --pid-file=...`, bounded.
    fn upgrade(&self) -> Output {
        client(&[
            "--upgrade".into(),
            format!("--pid-file={}", self.pid_file.display()),
        ])
    }

    /// `--status --json`: the running start_server's own account.
    fn status(&self) -> Value {
        let out = client(&["--status".into(), "--json".into(), self.control()]);
        assert!(out.status.success(), "--status: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("--status --json is JSON")
    }

    /// The same start_server serves on, its worker its child, in the version it had.
    fn runs_on_as_before(&self, version: &str) {
        assert!(
            alive(self.pid()),
            "start_server (pid {}) is gone",
            self.pid()
        );
        let (worker, _) = served_by(&self.addr);
        assert!(
            children(self.pid()).contains(&worker),
            "worker {worker} is not start_server's child"
        );
        assert_eq!(
            self.status()["version"],
            version,
            "start_server now runs another version"
        );
    }
}

#[test]
fn an_upgrade_never_runs_a_start_server_planted_where_a_bare_argv0_would_find_it() {
    assert_root();
    let tmp = TempDir::new();
    let shared = tmp.dir("shared", 0o1777);
    let binary = Installed::binary(&tmp, "bin");
    // nobody plants `start_server` in the shared directory: run by root, it leaves a marker in a
    // directory only root may write, then runs the real binary so that nothing else shows.
    let marker = tmp.path("planted-ran");
    let planted = shared.join("start_server");
    as_nobody(
        "printf '#!/bin/sh\\ntouch %s\\nexec %s \"$@\"\\n' \"$1\" \"$2\" > \"$3\" && chmod 755 \"$3\"",
        &[&marker, &binary, &planted],
    );
    // The trap works: run by root, it leaves the marker.
    let out = output_within(Command::new(&planted).arg("--version"));
    assert!(out.status.success() && marker.exists());
    fs::remove_file(&marker).unwrap();

    // Started as shells and some supervisors do: a bare argv[0], from the shared directory, with
    // the system's PATH (which has no start_server, or another one: Perl's /usr/bin/start_server
    // where it is installed).
    let mut command = Command::new(&binary);
    command
        .arg0("start_server")
        .current_dir(&shared)
        .env("PATH", "/usr/bin:/bin");
    let it = Installed::start(&tmp, binary.clone(), command);
    let argv0 = fs::read(format!("/proc/{}/cmdline", it.pid())).unwrap();
    assert!(argv0.starts_with(b"start_server\0"));
    assert_eq!(
        fs::read_link(format!("/proc/{}/cwd", it.pid())).unwrap(),
        shared
    );

    install(&it.binary, &newer_build());
    let out = it.upgrade();
    assert!(
        !marker.exists(),
        "root ran the start_server nobody planted in the working directory:\n{}",
        text(&out.stderr)
    );
    assert!(out.status.success(), "--upgrade: {}", text(&out.stderr));
    assert_eq!(it.status()["version"], new_version());
    assert_eq!(it.status()["pid"], it.pid());
}

/// After `make_unsafe` (with the newer build installed), `--upgrade` is refused saying `why`,
/// and start_server runs on as it was.
fn upgrade_refused(tmp: &TempDir, it: &Installed, make_unsafe: impl FnOnce(), why: &str) {
    install(&it.binary, &newer_build());
    make_unsafe();
    let out = it.upgrade();
    let said = text(&out.stderr);
    it.runs_on_as_before(env!("CARGO_PKG_VERSION"));
    assert_eq!(out.status.code(), Some(1), "--upgrade: {said}");
    assert!(said.contains(why), "--upgrade does not say {why:?}: {said}");
    // Still supervising: a reload works.
    it.server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
}

#[test]
fn an_upgrade_to_a_binary_another_user_can_write_is_refused() {
    assert_root();
    let tmp = TempDir::new();
    let it = Installed::run(&tmp, "bin");
    let binary = it.binary.clone();
    upgrade_refused(
        &tmp,
        &it,
        || {
            chown(&binary, Some(0), Some(NOBODY)).unwrap();
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o775)).unwrap();
            assert!(nobody_can("test -w \"$1\"", &[&binary]));
        },
        "writable by",
    );
}

#[test]
fn an_upgrade_to_a_binary_another_user_owns_is_refused() {
    assert_root();
    let tmp = TempDir::new();
    let it = Installed::run(&tmp, "bin");
    let binary = it.binary.clone();
    upgrade_refused(
        &tmp,
        &it,
        || chown(&binary, Some(NOBODY), Some(NOBODY)).unwrap(),
        "owned by",
    );
}

#[test]
fn an_upgrade_from_under_a_directory_another_user_can_write_is_refused() {
    assert_root();
    let tmp = TempDir::new();
    // Two levels down: the directory that gives it away is not the binary's own.
    let it = Installed::run(&tmp, "opt/bin");
    let above = tmp.path("opt");
    upgrade_refused(
        &tmp,
        &it,
        || {
            fs::set_permissions(&above, fs::Permissions::from_mode(0o777)).unwrap();
            // nobody could swap the whole bin directory.
            assert!(nobody_can("mkdir \"$1\"/x && rmdir \"$1\"/x", &[&above]));
        },
        "writable by",
    );
}

/// nobody's [`FORGER`] listening at `shared/app.pid.control` (`shared` sticky and
/// world-writable); returns the socket's path and the forger.
fn squatted_control(tmp: &TempDir) -> (PathBuf, Server) {
    let shared = tmp.dir("shared", 0o1777);
    let socket = shared.join("app.pid.control");
    let forger = tmp.script("forger.py", FORGER);
    let mut command = as_user(NOBODY, SYSTEM_PYTHON);
    command.arg(forger).arg(&socket);
    let squatter = Server::spawn(command, &[]);
    wait_until("nobody's control socket", || {
        UnixStream::connect(&socket).ok()
    });
    assert_eq!(owner(&socket), NOBODY);
    // It answers, and with what an unwary client would believe.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    std::io::Write::write_all(&mut stream, b"{\"command\":\"reload\"}\n").unwrap();
    let mut reply = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut reply).unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["generation"], 42);
    (socket, squatter)
}

/// What became of a start_server that must refuse to start.
enum Start {
    Exited(ExitStatus),
    /// It serves (its worker listed in its status file) when it should have refused.
    Serves,
}

/// Starts start_server with `options` (its status file `tmp/status`, a sleeping worker); waits
/// until it exits or serves.
fn start_refused(tmp: &TempDir, options: &[String]) -> (Start, String) {
    let sleeper = tmp.script("sleeper.sh", SLEEPER);
    let mut all = options.to_vec();
    all.extend([
        tmp.arg("--status-file", "status"),
        "--".into(),
        sleeper.display().to_string(),
    ]);
    let mut server = Server::start(&all, &[]);
    let status_file = tmp.path("status");
    let outcome = wait_until("start_server to exit or serve", || {
        if let Some(status) = server.child.try_wait().ok().flatten() {
            return Some(Start::Exited(status));
        }
        let workers = children(server.pid());
        status_entries(&status_file)
            .iter()
            .any(|(_, pid)| workers.contains(pid))
            .then_some(Start::Serves)
    });
    if let Start::Exited(_) = outcome {
        server.wait_exit();
    }
    (outcome, server.log())
}

/// start_server with `options` refuses to start: it exits with `code` (any failure if `None`)
/// before a worker serves.
fn refuses_to_start(tmp: &TempDir, options: &[String], code: Option<i32>) -> String {
    let (outcome, log) = start_refused(tmp, options);
    match outcome {
        Start::Serves => panic!("start_server {options:?} started:\n{log}"),
        Start::Exited(status) => {
            assert!(!status.success(), "{options:?}:\n{log}");
            if code.is_some() {
                assert_eq!(status.code(), code, "{options:?}:\n{log}");
            }
        }
    }
    log
}

#[test]
fn a_squatted_default_control_socket_stops_the_start() {
    assert_root();
    let tmp = TempDir::new();
    let (socket, _squatter) = squatted_control(&tmp);
    let pid_file = socket.with_extension("");
    assert_eq!(pid_file.extension().unwrap(), "pid");
    let log = refuses_to_start(
        &tmp,
        &[
            format!("--port=127.0.0.1:{}", free_port()),
            format!("--pid-file={}", pid_file.display()),
        ],
        None,
    );
    assert!(
        log.contains(&socket.display().to_string()),
        "the refusal does not name {}:\n{log}",
        socket.display()
    );
    // The squatter's socket is left as it was.
    UnixStream::connect(&socket).expect("nobody's socket still answers");
}

#[test]
fn root_clients_do_not_believe_another_users_control_socket() {
    assert_root();
    let tmp = TempDir::new();
    let (socket, _squatter) = squatted_control(&tmp);
    let control = format!("--control={}", socket.display());
    let believed: Vec<String> = ["--check", "--reload", "--upgrade", "--status"]
        .into_iter()
        .filter_map(|command| {
            let out = client(&[command.into(), control.clone()]);
            out.status.success().then(|| {
                format!(
                    "{command}: {}{}",
                    text(&out.stdout).trim(),
                    text(&out.stderr).trim()
                )
            })
        })
        .collect();
    assert!(
        believed.is_empty(),
        "root's clients believed nobody's control socket:\n{}",
        believed.join("\n")
    );
}

#[test]
fn a_root_client_does_not_follow_a_link_another_user_planted_to_their_own_socket() {
    assert_root();
    let tmp = TempDir::new();
    // nobody's own directory where only nobody and root write (as a RuntimeDirectory= is), away
    // from /tmp: /run and every directory above it are root's, 0755.
    let home = PathBuf::from(format!("/run/ss-hostile-{}", std::process::id()));
    let _ = fs::remove_dir_all(&home);
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = home.join("nobody");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.join("control");
    let mut command = as_user(NOBODY, SYSTEM_PYTHON);
    command.arg(tmp.script("forger.py", FORGER)).arg(&socket);
    let _forger = Server::spawn(command, &[]);
    wait_until("nobody's control socket", || {
        UnixStream::connect(&socket).ok()
    });
    // Where root's service would put its directory, nobody plants a link to their own.
    let shared = tmp.dir("shared", 0o1777);
    as_nobody("ln -s \"$1\" \"$2\"/app", &[&theirs, &shared]);
    let out = client(&[
        "--status".into(),
        format!("--control={}", shared.join("app/control").display()),
    ]);
    let _ = fs::remove_dir_all(&home);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("writable by other users"),
        "{}",
        text(&out.stderr)
    );
}

/// A root-owned control socket at `path` (SO_PEERCRED has nothing against it) whose server
/// takes `connections` connections and hands each to `answer`.
fn root_server(path: &Path, connections: usize, answer: fn(UnixStream)) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections).flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
}

/// Reads until the client goes.
fn drain(mut stream: UnixStream) {
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

#[test]
fn client_requests_are_bounded_in_time_and_reply_size() {
    assert_root();
    let tmp = TempDir::new();
    // Root's own server, which never answers.
    let silent = tmp.path("silent.control");
    root_server(&silent, 2, drain);
    let out = client(&[
        "--reload".into(),
        format!("--control={}", silent.display()),
        "--timeout=2".into(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--reload --timeout=2 on a silent server: {}",
        text(&out.stderr)
    );
    // --status has a short bound of its own.
    let out = client(&["--status".into(), format!("--control={}", silent.display())]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // One whose reply never ends (64 MiB without a newline, then silence): only a bound on
    // the reply's size ends the request before the time bound.
    let endless = tmp.path("endless.control");
    root_server(&endless, 1, |mut stream| {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1024 {
            if std::io::Write::write_all(&mut stream, &chunk).is_err() {
                return;
            }
        }
        drain(stream);
    });
    let out = client(&[
        "--reload".into(),
        format!("--control={}", endless.display()),
        "--timeout=3600".into(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--reload on an endless reply: {}",
        text(&out.stderr)
    );
}

/// start_server's path during [`the_upgrade_check_does_not_block_the_event_loop`]: its
/// `--upgrade-check` (stdout held open) lasts until `release` exists, at most 8 s (below
/// start_server's bound on a check), and leaves `started` and `done` behind; otherwise, and
/// then, it is the real binary.
fn slow_check(started: &Path, release: &Path, done: &Path, real: &Path) -> String {
    r#"#!/bin/bash
case " $* " in *' --upgrade-check '*)
  touch STARTED
  for _ in $(seq 80); do [ -e RELEASE ] && break; sleep 0.1; done
  touch DONE ;;
esac
exec REAL "$@"
"#
    .replace("STARTED", &started.display().to_string())
    .replace("RELEASE", &release.display().to_string())
    .replace("DONE", &done.display().to_string())
    .replace("REAL", &real.display().to_string())
}

#[test]
fn the_upgrade_check_does_not_block_the_event_loop() {
    assert_root();
    let tmp = TempDir::new();
    let it = Installed::run(&tmp, "bin");
    let real = Installed::binary(&tmp, "real");
    install(&real, &newer_build());
    let (started, release, done) = (tmp.path("started"), tmp.path("release"), tmp.path("done"));
    install(
        &it.binary,
        slow_check(&started, &release, &done, &real).as_bytes(),
    );
    let mut upgrade = Server::spawn(
        {
            let mut command = start_server_command();
            command
                .arg("--upgrade")
                .arg(format!("--pid-file={}", it.pid_file.display()));
            command
        },
        &[],
    );
    wait_until("the upgrade check to start", || {
        started.exists().then_some(())
    });

    // While the check runs: --status answers, a HUP reloads (the old worker reaped).
    let status = client(&["--status".into(), it.control()]);
    assert!(
        !done.exists(),
        "--status was answered only once the check had finished"
    );
    assert!(status.status.success(), "{}", text(&status.stderr));
    it.server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    assert!(
        !done.exists(),
        "the reload finished only once the check had"
    );

    fs::write(&release, "").unwrap();
    let outcome = upgrade.wait_exit();
    assert!(outcome.success(), "--upgrade: {}", upgrade.log());
    assert_eq!(it.status()["version"], new_version());
    assert_eq!(served_by(&it.addr).1, 2);
}

/// start_server's path during [`an_upgrade_that_fails_after_the_exec_rolls_back`]: with
/// `--upgrade-check` it is the real binary; executed with `--upgrade-state=N`, it runs the
/// real binary with /dev/null at fd N, a new image that cannot read the state.
fn unreadable_state(real: &Path) -> String {
    r#"#!/bin/bash
for arg in "$@"; do
  case $arg in --upgrade-state=*) fd=${arg#--upgrade-state=} ;; esac
done
if [[ $fd =~ ^[0-9]+$ ]]; then
  eval "exec REAL \"\$@\" $fd</dev/null"
fi
[ -n "$fd" ] && echo "test wrapper: --upgrade-state=$fd is not one fd number" >&2
exec REAL "$@"
"#
    .replace("REAL", &real.display().to_string())
}

#[test]
fn an_upgrade_that_fails_after_the_exec_rolls_back() {
    assert_root();
    let tmp = TempDir::new();
    let it = Installed::run(&tmp, "bin");
    let (worker, generation) = served_by(&it.addr);
    let real = Installed::binary(&tmp, "real");
    install(&real, &newer_build());
    install(&it.binary, unreadable_state(&real).as_bytes());

    let out = it.upgrade();
    let said = text(&out.stderr);
    it.runs_on_as_before(env!("CARGO_PKG_VERSION"));
    assert_eq!(served_by(&it.addr), (worker, generation), "{said}");
    assert_eq!(out.status.code(), Some(1), "--upgrade: {said}");
    assert!(said.contains("rolled back"), "--upgrade: {said}");
    // Still supervising: a reload works.
    it.server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), generation + 1);
    wait_until("the new generation to answer", || {
        (served_by(&it.addr).1 == generation + 1).then_some(())
    });
    assert!(children(it.pid()).contains(&served_by(&it.addr).0));
}

#[test]
fn a_failed_start_leaves_existing_files_alone() {
    let tmp = TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pid_file = tmp.path("app.pid");
    let status_file = tmp.path("status");
    fs::write(&pid_file, "12345\n").unwrap();
    fs::write(&status_file, "7:12345\n").unwrap();
    let inodes = (
        fs::metadata(&pid_file).unwrap().ino(),
        fs::metadata(&status_file).unwrap().ino(),
    );
    let log = refuses_to_start(
        &tmp,
        &[
            format!("--port={}", taken.local_addr().unwrap()),
            format!("--pid-file={}", pid_file.display()),
        ],
        Some(1),
    );
    for (file, content, inode) in [
        (&pid_file, "12345\n", inodes.0),
        (&status_file, "7:12345\n", inodes.1),
    ] {
        let meta = fs::metadata(file)
            .unwrap_or_else(|e| panic!("{}: {e} after a failed start:\n{log}", file.display()));
        assert_eq!(meta.ino(), inode, "{} replaced", file.display());
        assert_eq!(fs::read_to_string(file).unwrap(), content);
    }
}

#[test]
fn a_pid_file_replaced_during_the_run_survives_the_stop() {
    let tmp = TempDir::new();
    let port = free_port();
    let worker = tmp.http_worker().display().to_string();
    let mut server = tmp.start_server(
        &[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--pid-file", "app.pid"),
        ],
        &[&worker],
        &[("SEND_READY", "1".into())],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    // Root replaces it (a new file renamed over it), as an operator or a tool might.
    fs::write(tmp.path("app.pid.new"), "1\n").unwrap();
    fs::rename(tmp.path("app.pid.new"), tmp.path("app.pid")).unwrap();
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success(), "{}", server.log());
    assert_eq!(
        fs::read_to_string(tmp.path("app.pid")).ok().as_deref(),
        Some("1\n"),
        "start_server removed a pid file it did not write"
    );
}

/// The report of a single-copy worker of start_server with `options` and `env`.
fn single_copy_report(tmp: &TempDir, options: &[String], env: &[(&str, String)]) -> Report {
    let mut all = vec!["--port=127.0.0.1:0".to_string()];
    all.extend_from_slice(options);
    all.extend(["--".into(), tmp.report_worker().display().to_string()]);
    let mut env = env.to_vec();
    env.push(("REPORT", tmp.path("report").display().to_string()));
    let server = Server::start(&all, &env);
    let report = Report::parse(&tmp.wait_report());
    assert!(alive(server.pid()));
    report
}

#[test]
fn server_starter_worker_from_start_servers_environment_does_not_reach_a_single_copy() {
    let tmp = TempDir::new();
    let report = single_copy_report(&tmp, &[], &[("SERVER_STARTER_WORKER", "5".into())]);
    assert_eq!(report.env("SERVER_STARTER_WORKER"), None);
}

#[test]
fn server_starter_worker_from_the_envdir_does_not_reach_a_single_copy() {
    let tmp = TempDir::new();
    let envdir = tmp.dir("env", 0o755);
    fs::write(envdir.join("SERVER_STARTER_WORKER"), "5\n").unwrap();
    let report = single_copy_report(&tmp, &[tmp.arg("--envdir", "env")], &[]);
    assert_eq!(report.env("SERVER_STARTER_WORKER"), None);
}

/// A worker's STATUS= text with a colour, a bell, a carriage return and a terminal title.
const HOSTILE_STATUS: &str = "\x1b[31mALERT\x1b[0m\x07 all \rfine\x1b]0;owned\x07";

/// `text` has none of the bytes a terminal acts on: ESC, BEL, CR.
fn no_terminal_controls(what: &str, text: &str) {
    for byte in [0x1b, 0x07, b'\r'] {
        assert!(
            !text.as_bytes().contains(&byte),
            "{what} has byte {byte:#04x} raw: {text:?}"
        );
    }
}

#[test]
fn escape_sequences_in_a_workers_status_reach_neither_status_nor_systemd() {
    let tmp = TempDir::new();
    let worker = tmp.http_worker().display().to_string();
    let env = |systemd: Option<&NotifySocket>| {
        let mut env = vec![
            ("SEND_READY", "1".to_string()),
            ("STATUS_TEXT", HOSTILE_STATUS.to_string()),
        ];
        env.extend(systemd.map(|s| ("NOTIFY_SOCKET", s.address.clone())));
        env
    };

    // One worker: its STATUS= goes on to systemd's (shown by systemctl status).
    let systemd = NotifySocket::at_path(&tmp.path("systemd.sock"));
    let server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{}", free_port())],
        &[&worker],
        &env(Some(&systemd)),
    );
    let told = wait_until("the worker's status in systemd's STATUS=", || {
        systemd.all().into_iter().find(|m| m.contains("ALERT"))
    });
    no_terminal_controls("STATUS= to systemd", &told);
    for message in systemd.all() {
        no_terminal_controls("a notification to systemd", &message);
    }
    no_terminal_controls("start_server's log", &server.log());
    drop(server);

    // Copies: --status lists each one's STATUS=.
    let control = tmp.arg("--control", "ctl");
    let server = tmp.start_server(
        &[
            &format!("--port=127.0.0.1:{}", free_port()),
            "--workers=2",
            &control,
        ],
        &[&worker],
        &env(None),
    );
    wait_until("the workers' STATUS= in --status --json", || {
        let out = client(&["--status".into(), "--json".into(), control.clone()]);
        (text(&out.stdout).matches("ALERT").count() == 2).then_some(())
    });
    let out = client(&["--status".into(), control]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("ALERT"),
        "the status is not shown: {shown:?}"
    );
    no_terminal_controls("--status", &shown);
    no_terminal_controls("start_server's log", &server.log());
}

#[test]
fn options_that_cannot_work_are_usage_errors() {
    let tmp = TempDir::new();
    let port = || format!("--port=127.0.0.1:{}", free_port());
    refuses_to_start(&tmp, &[port(), "--max-extra=1".into()], Some(2));
    refuses_to_start(
        &tmp,
        &[port(), "--workers=1".into(), "--max-extra=1".into()],
        Some(2),
    );
    for signal in ["STOP", "TSTP", "TTIN", "TTOU"] {
        refuses_to_start(
            &tmp,
            &[port(), format!("--signal-on-term={signal}")],
            Some(2),
        );
    }
    // Still fine: --max-extra with copies to roll.
    let (outcome, log) = start_refused(
        &tmp,
        &[port(), "--workers=2".into(), "--max-extra=1".into()],
    );
    assert!(matches!(outcome, Start::Serves), "{log}");
}

#[test]
fn the_attacks_preconditions_hold() {
    assert_root();
    let tmp = TempDir::new();
    // nobody is uid and gid 65534 alone, with no other group.
    let ids = output_within(as_user(NOBODY, "/bin/sh").args(["-c", "id -u; id -g; id -G"]));
    assert_eq!(text(&ids.stdout), "65534\n65534\n65534\n");
    // nobody may not write root's 0755 directories, nor root's 0755 files.
    let private = tmp.dir("private", 0o755);
    assert!(!nobody_can("touch \"$1\"/x", &[&private]));
    assert!(!private.join("x").exists());
    let binary = Installed::binary(&tmp, "bin");
    assert!(!nobody_can("test -w \"$1\"", &[&binary]));
    assert!(!nobody_can(
        "mv \"$1\" \"$1\".x",
        &[binary.parent().unwrap()]
    ));
    // ... but may add files to a sticky world-writable one, and not replace root's files there.
    let shared = tmp.dir("shared", 0o1777);
    as_nobody("echo planted > \"$1\"/x", &[&shared]);
    assert_eq!(owner(&shared.join("x")), NOBODY);
    fs::write(shared.join("root's"), "root\n").unwrap();
    assert!(!nobody_can(
        "echo x > \"$1\".new && mv \"$1\".new \"$1\"",
        &[&shared.join("root's")]
    ));
    assert_eq!(fs::read_to_string(shared.join("root's")).unwrap(), "root\n");
    // nobody cannot signal a root process alone: the attacks need root's client to do it.
    let victim = victim(&tmp);
    assert!(!nobody_can(&format!("kill -TERM {}", victim.pid()), &[]));
    assert_eq!(pending_signals(victim.pid()), 0);
    // A signal sent to the victim shows (so that the pid file tests would see one).
    // SAFETY: kill(2) on the test's own child.
    unsafe { libc::kill(victim.pid(), libc::SIGHUP) };
    assert_ne!(pending_signals(victim.pid()), 0);
    assert!(alive(victim.pid()));
    // nobody can run the system's Python (the forger) and setpriv's group write works.
    let out = output_within(as_user(NOBODY, SYSTEM_PYTHON).args(["-c", "print(1)"]));
    assert_eq!(text(&out.stdout), "1\n", "{}", text(&out.stderr));
    chown(&binary, Some(0), Some(NOBODY)).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o775)).unwrap();
    assert!(nobody_can("test -w \"$1\"", &[&binary]));
}
