//! Shared test harness: runs the real `start_server` binary with real workers (Python and shell
//! scripts written to a temporary directory), waits for conditions with a generous bound, and
//! kills everything it started when a test ends.
//!
//! Here: temporary directories, waiting, HTTP to the test worker. Beside it: `server` (start_server
//! as a child: `Server`, `Supervised`, `Collected` output, status files), `workers` (every test
//! worker, its script in `workers/`), `report` (what the report worker says), `procfs` (what
//! /proc says), `builds` (another build of the binary, for upgrades), `systemd` (socket activation,
//! notify sockets, scenarios under a real systemd), `users` (commands run as another local user),
//! `images` (static binaries, Containerfiles), `kubernetes` (what the manifests say),
//! `prometheus` (a real Prometheus server scraping a target), `traffic` (a client loop).
//! All of it is re-exported, so a test file says `use common::*;`.
// Each test file uses some of it.
#![allow(dead_code, unused_imports)]

pub mod builds;
pub mod images;
pub mod kubernetes;
pub mod procfs;
pub mod prometheus;
pub mod report;
pub mod server;
pub mod systemd;
pub mod traffic;
pub mod users;
pub mod workers;

pub use builds::*;
pub use images::*;
pub use kubernetes::*;
pub use procfs::*;
pub use prometheus::*;
pub use report::*;
pub use server::*;
pub use systemd::*;
pub use traffic::*;
pub use users::*;
pub use workers::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any awaited condition may take on a loaded machine before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_start_server")
}

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

    /// A directory `name` here with `mode` (0o1777: anyone may add files to it, as to /tmp).
    pub fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(&path).expect("create directory");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod directory");
        path
    }

    /// Writes an executable script.
    pub fn script(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        write_executable(&path, text.as_bytes());
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `contents` to `path`, mode 0755, through a child (`cat`): a descriptor open for writing
/// in this multi-threaded process would be inherited by any child another test thread forks
/// meanwhile, until that child's exec, and running the file then would fail with ETXTBSY ("Text
/// file busy").
pub fn write_executable(path: &Path, contents: &[u8]) {
    let mut cat = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn cat");
    let mut stdin = cat.stdin.take().expect("cat's stdin");
    stdin.write_all(contents).expect("write to cat");
    drop(stdin);
    assert!(
        cat.wait().expect("wait for cat").success(),
        "cannot write {}",
        path.display()
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
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

/// Runs `command` to completion, its output collected; fails the test if it is still running
/// after [`PATIENCE`] (it and its process group are then killed): for a command that must not
/// hang.
pub fn output_within(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout pipe")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr pipe")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break status;
        }
        if start.elapsed() > PATIENCE {
            // SAFETY: kill(2) on the process group this command leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{command:?} still running after {PATIENCE:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Waits up to `limit` until `check` returns `Some`; `None` if it never did (for a failure
/// message that says more than [`wait_until`]'s).
pub fn wait_until_or<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago, below the kernel's ephemeral range: a port from bind(0)
/// is also where the kernel puts the source port of outgoing connections, and tests connecting
/// in parallel took one back before its test could bind it (`Address already in use`).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000, ephemeral_from.saturating_sub(10_000));
    assert!(
        span >= 1000,
        "the ephemeral port range starts at {ephemeral_from}: too low"
    );
    // Each test process starts at its own place, so that two suites running at once rarely meet.
    let start = std::process::id() * 97;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port from {low} to {ephemeral_from}");
}

/// One HTTP/1.0 GET; the body of the answer.
pub fn http_get(addr: &str) -> std::io::Result<String> {
    http_get_within(addr, Duration::from_secs(20))
}

/// One HTTP/1.0 GET that fails after `limit` to connect or `limit` without an answer (where
/// nothing answers a SYN, as at a container's published port once it is gone, a connect would
/// otherwise wait for minutes).
pub fn http_get_within(addr: &str, limit: Duration) -> std::io::Result<String> {
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&to, limit)?;
    stream.set_read_timeout(Some(limit))?;
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

/// Strings for args.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
