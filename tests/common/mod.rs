//! Shared test harness: runs the real `start_server` binary with real workers (Python and shell
//! scripts written to a temporary directory), waits for conditions with a generous bound, and
//! kills everything it started when a test ends.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any awaited condition may take on a loaded machine before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_start_server")
}

/// An HTTP worker: serves every TCP socket of SERVER_STARTER_PORT, answering
/// `pid=PID gen=GEN`; sends READY=1 to NOTIFY_SOCKET when $SEND_READY is set; on SIGTERM (or the signal in $STOP_SIGNAL) it finishes the request at hand,
/// appends the signal's name to $SIGNAL_LOG if set, and exits.
pub const HTTP_WORKER: &str = r#"#!/usr/bin/env python3
import os, select, signal, socket, sys
socks = []
for entry in filter(None, os.environ.get("SERVER_STARTER_PORT", "").split(";")):
    key, fd = entry.split("=", 1)
    s = socket.socket(fileno=int(fd))
    if s.type == socket.SOCK_STREAM:
        s.setblocking(False)
        socks.append(s)
gen = os.environ.get("SERVER_STARTER_GENERATION")
if os.environ.get("SEND_READY") and os.environ.get("NOTIFY_SOCKET"):
    target = os.environ["NOTIFY_SOCKET"]
    if target.startswith("@"):
        target = "\0" + target[1:]
    note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    note.sendto(b"READY=1\nSTATUS=python worker up", target)
busy = False
stop = False
class Stop(Exception):
    pass
def on_signal(signum, frame):
    global stop
    log = os.environ.get("SIGNAL_LOG")
    if log:
        with open(log, "a") as f:
            f.write("%d %s\n" % (os.getpid(), signal.Signals(signum).name))
    stop = True
    if not busy:
        raise Stop()
for name in os.environ.get("STOP_SIGNALS", "SIGTERM").split(","):
    signal.signal(getattr(signal, name), on_signal)
try:
    while True:
        ready, _, _ = select.select(socks, [], [])
        for s in ready:
            busy = True
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                busy = False
                continue
            conn.setblocking(True)
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = ("pid=%d gen=%s\n" % (os.getpid(), gen)).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            conn.close()
            busy = False
            if stop:
                raise Stop()
except Stop:
    pass
"#;

/// A worker that writes what it was given (env, fds, signal state, cwd) to $REPORT, then sleeps.
pub const REPORT_WORKER: &str = r#"#!/usr/bin/env python3
import json, os, signal, socket, time
sockets = {}
for entry in filter(None, os.environ.get("SERVER_STARTER_PORT", "").split(";")):
    key, fd = entry.split("=", 1)
    s = socket.socket(fileno=int(fd))
    sockets[key] = {"fd": int(fd), "family": s.family.name, "type": s.type.name,
                    "name": str(s.getsockname())}
    s.detach()
report = {"env": dict(os.environ), "sockets": sockets, "cwd": os.getcwd(), "pid": os.getpid()}
tmp = os.environ["REPORT"] + ".tmp"
with open(tmp, "w") as f:
    json.dump(report, f)
os.rename(tmp, os.environ["REPORT"])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
while True:
    time.sleep(3600)
"#;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ss-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        TempDir(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn arg(&self, option: &str, name: &str) -> String {
        format!("{option}={}", self.path(name).display())
    }

    /// Writes the HTTP worker; returns a wrapper that fails at once (exit 3) when the file named
    /// by $FAIL_IF_EXISTS exists, before Python even starts, so that a failed start is one
    /// whatever --interval and however slow the machine.
    pub fn http_worker(&self) -> PathBuf {
        let python = self.script("worker.py", HTTP_WORKER);
        self.script(
            "worker.sh",
            &format!(
                "#!/bin/sh\n[ -e \"${{FAIL_IF_EXISTS:-/nonexistent}}\" ] && exit 3\nexec {} \"$@\"\n",
                python.display()
            ),
        )
    }

    /// Writes the HTTP worker behind a wrapper that exports SEND_READY (so it sends READY=1)
    /// only while `flag` exists.
    pub fn http_worker_ready_while(&self, flag: &Path) -> PathBuf {
        let worker = self.http_worker();
        self.script(
            "maybe_ready.sh",
            &format!(
                "#!/bin/sh\n[ -e {} ] && export SEND_READY=1\nexec {}\n",
                flag.display(),
                worker.display()
            ),
        )
    }

    /// Starts start_server with its status file here (`status`), `options`, then `--` and
    /// `command`.
    pub fn start_server(
        &self,
        options: &[&str],
        command: &[&str],
        env: &[(&str, String)],
    ) -> Server {
        let mut a = vec![self.arg("--status-file", "status")];
        a.extend(options.iter().map(|o| o.to_string()));
        a.push("--".into());
        a.extend(command.iter().map(|c| c.to_string()));
        Server::start(&a, env)
    }

    /// Writes an executable script.
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, text).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Waits until `check` returns `Some`, failing the test with `what` after [`PATIENCE`].
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > PATIENCE {
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// One HTTP/1.0 GET; the body of the answer.
pub fn http_get(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    match answer.split_once("\r\n\r\n") {
        Some((_, body))
            if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!("bad answer {answer:?}"))),
    }
}

/// `pid=PID gen=GEN` from the HTTP worker, once it answers.
pub fn served_by(addr: &str) -> (i32, u64) {
    let body = wait_until(&format!("an answer from {addr}"), || http_get(addr).ok());
    parse_served(&body)
}

pub fn parse_served(body: &str) -> (i32, u64) {
    let mut pid = 0;
    let mut generation = 0;
    for part in body.split_whitespace() {
        if let Some(p) = part.strip_prefix("pid=") {
            pid = p.parse().expect("pid");
        }
        if let Some(g) = part.strip_prefix("gen=") {
            generation = g.parse().expect("gen");
        }
    }
    (pid, generation)
}

/// A running start_server whose stderr is collected; it and its workers are killed on drop.
pub struct Server {
    pub child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts `start_server ARGS` with `env` added, in a process group of its own.
    pub fn start(args: &[String], env: &[(&str, String)]) -> Server {
        let mut command = Command::new(bin());
        command.args(args);
        Self::spawn(command, env)
    }

    /// Starts an arbitrary command (e.g. a wrapper around start_server) the same way.
    pub fn spawn(mut command: Command, env: &[(&str, String)]) -> Server {
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("spawn start_server");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        Server {
            child,
            log,
            reader: Some(reader),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything start_server (and its workers) wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle` at least `count` times.
    pub fn wait_log_n(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            if start.elapsed() > PATIENCE {
                panic!("timed out waiting for {count}x {needle:?} in the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_log_n(needle, 1)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for start_server to exit and for its stderr to close.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_until("start_server to exit", || {
            self.child.try_wait().ok().flatten()
        });
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.status = Some(status);
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Runs start_server to completion (for errors and client modes): status and stderr.
pub fn run(args: &[String]) -> (ExitStatus, String) {
    let mut server = Server::start(args, &[]);
    let status = server.wait_exit();
    (status, server.log())
}

/// Lines `GEN:PID` of a status file.
pub fn status_entries(path: &Path) -> Vec<(u64, i32)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (g, p) = l.split_once(':')?;
            Some((g.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}

/// Waits until the status file lists exactly one generation, `generation` or later.
pub fn wait_sole_generation(path: &Path, generation: u64) -> (u64, i32) {
    wait_until(
        &format!("generation {generation} alone in the status file"),
        || match status_entries(path).as_slice() {
            [(g, p)] if *g >= generation => Some((*g, *p)),
            _ => None,
        },
    )
}

pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at the state too.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Shell helpers for scenarios run under a real systemd: `fail MSG` (with the units' status),
/// `wait_for CONDITION` (bounded), `field NAME TEXT` (a `NAME=123` number from a worker's answer).
pub const SCENARIO_HELPERS: &str = r#"set -euo pipefail
fail() { echo "FAIL: $*"; systemctl status --no-pager -l 'server-starter*' 2>&1 | tail -30; exit 1; }
wait_for() { for _ in $(seq 300); do if eval "$1"; then return 0; fi; sleep 0.1; done; fail "timed out: $1"; }
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }
"#;

/// Boots a throw-away container with a real systemd (the project's harness,
/// `tests/systemd-container/run-in-systemd`), with `dir` at /src, runs [`SCENARIO_HELPERS`] then
/// `scenario` as root inside, and fails the test unless the scenario got to its end. A missing
/// prerequisite (root, systemd-nspawn, debootstrap, the Debian archive) fails it with the
/// harness's one line saying what to install. Returns the scenario's output.
pub fn run_in_systemd(dir: &TempDir, scenario: &str) -> String {
    let runner = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/systemd-container/run-in-systemd"
    );
    let script = dir.path("scenario.sh");
    fs::write(
        &script,
        format!("{SCENARIO_HELPERS}{scenario}\necho SCENARIO-OK\n"),
    )
    .expect("write the scenario");
    let output = Command::new(runner)
        // A boot takes seconds; a container that hangs on its way down (its scenario's output
        // is kept) must not hold the suite for long.
        .env("RUN_IN_SYSTEMD_TIMEOUT", "180")
        .arg("--bind")
        .arg(format!("{}:/src", dir.0.display()))
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {runner}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 125: the harness could not run at all; its last line says what is missing.
    if output.status.code() == Some(125) {
        panic!(
            "{}",
            stderr.lines().last().unwrap_or("run-in-systemd failed")
        );
    }
    let text = format!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success() && text.contains("SCENARIO-OK"),
        "scenario failed ({:?}):\n{text}",
        output.status
    );
    text
}

/// A test-owned notification socket collecting what start_server sends.
pub struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
    pub address: String,
}

impl NotifySocket {
    pub fn at_path(path: &Path) -> NotifySocket {
        Self::collect(
            UnixDatagram::bind(path).unwrap(),
            path.display().to_string(),
        )
    }

    pub fn abstract_name(name: &str) -> NotifySocket {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Self::collect(UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    }

    pub fn collect(socket: UnixDatagram, address: String) -> NotifySocket {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                sink.lock().unwrap().push(text);
            }
        });
        NotifySocket { messages, address }
    }

    pub fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a datagram containing every one of `lines`; returns it.
    pub fn wait_for(&self, lines: &[&str]) -> String {
        wait_until(&format!("a notification with {lines:?}"), || {
            self.all()
                .into_iter()
                .find(|m| lines.iter().all(|l| m.lines().any(|x| x.starts_with(l))))
        })
    }
}

/// Strings for args.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
