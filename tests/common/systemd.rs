//! What systemd gives: scenarios under a real systemd in a container, and notification
//! sockets that collect what start_server sends.

use std::fs;
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::{TempDir, wait_until};

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

/// `systemd-socket-activate` listening on each of `listen` (`PORT` or `HOST:PORT`) and naming
/// the sockets `names` (`--fdname`); the test adds the program it starts and its arguments.
pub fn socket_activate(listen: &[String], names: &str) -> Command {
    let mut command = Command::new("systemd-socket-activate");
    for address in listen {
        command.arg(format!("--listen={address}"));
    }
    if !names.is_empty() {
        command.arg(format!("--fdname={names}"));
    }
    command
}

/// Waits until systemd-socket-activate accepts a TCP connection at `addr`; that first connection
/// is what makes it start its program, as systemd would.
pub fn wait_listening(addr: &str) {
    wait_until("systemd-socket-activate to listen", || {
        TcpStream::connect(addr).ok()
    });
}
