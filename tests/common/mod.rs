//! Shared test harness: runs the real `start_server` binary with real workers (Python and shell
//! scripts written to a temporary directory), waits for conditions with a generous bound, and
//! kills everything it started when a test ends.
//!
//! Here: temporary directories, waiting, HTTP to the test worker. Beside it: `server` (start_server
//! as a child: `Server`, `Supervised`, `Collected` output, status files), `workers` (every test
//! worker, its script in `workers/`), `report` (what the report worker says), `procfs` (what
//! /proc says), `builds` (another build of the binary, for upgrades), `systemd` (socket
//! activation, notify sockets, scenarios under a real systemd), `prometheus` (a real Prometheus
//! server scraping a target).
//! All of it is re-exported, so a test file says `use common::*;`.
// Each test file uses some of it.
#![allow(dead_code, unused_imports)]

pub mod builds;
pub mod procfs;
pub mod prometheus;
pub mod report;
pub mod server;
pub mod systemd;
pub mod workers;

pub use builds::*;
pub use procfs::*;
pub use prometheus::*;
pub use report::*;
pub use server::*;
pub use systemd::*;
pub use workers::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

/// Strings for args.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
