//! start_server as a child of the test: started with its stderr collected, run to completion,
//! and what it writes to its status file.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::time::{Duration, Instant};

use super::{PATIENCE, TempDir, bin, served_by, wait_until};

/// Text read line by line from `source` (start_server's stderr, a pipe or socket a test holds)
/// by a thread of its own, for a test to wait on; the thread ends when the source closes.
pub struct Collected {
    text: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Collected {
    pub fn start(source: impl Read + Send + 'static) -> Collected {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        Collected {
            text,
            reader: Some(reader),
        }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the text contains `needle`; returns all of it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_n(needle, 1)
    }

    /// Waits until the text contains `needle` at least `count` times; returns all of it.
    pub fn wait_for_n(&self, needle: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.matches(needle).count() >= count {
                return text;
            }
            if start.elapsed() > PATIENCE {
                panic!("timed out waiting for {count}x {needle:?} in the log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the source to close and everything in it to be read.
    pub fn join(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A running start_server whose stderr is collected; it and its workers are killed on drop.
pub struct Server {
    pub child: Child,
    log: Collected,
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
        Server {
            child,
            log: Collected::start(stderr),
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything start_server (and its workers) wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Waits until the log contains `needle` at least `count` times.
    pub fn wait_log_n(&self, needle: &str, count: usize) -> String {
        self.log.wait_for_n(needle, count)
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
        self.log.join();
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

/// start_server with its stderr wherever the test puts it; its process group is killed on drop.
pub struct Supervised {
    pub child: Child,
    /// start_server's pid (the child's, unless the child is a wrapper).
    pub pid: i32,
}

impl Supervised {
    pub fn start(tmp: &TempDir, options: &[String], stderr: Stdio, command: &mut Command) -> Self {
        command
            .arg(tmp.arg("--status-file", "status"))
            .args(options)
            .arg("--")
            .arg(tmp.http_worker())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        Self::wrap(command.spawn().expect("spawn start_server"))
    }

    pub fn wrap(child: Child) -> Self {
        let pid = child.id() as i32;
        Supervised { child, pid }
    }

    pub fn hup(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid, libc::SIGHUP) };
    }

    pub fn assert_alive(&mut self) {
        assert!(super::alive(self.pid), "start_server died");
    }

    /// Serves generation `generation` now, reloads on HUP to the next one, and is still alive.
    pub fn serves_and_reloads(&mut self, tmp: &TempDir, addr: &str, generation: u64) {
        wait_sole_generation(&tmp.path("status"), generation);
        assert_eq!(served_by(addr).1, generation);
        self.hup();
        wait_sole_generation(&tmp.path("status"), generation + 1);
        wait_until("the new generation to answer", || {
            super::http_get(addr)
                .ok()
                .filter(|body| super::parse_served(body).1 == generation + 1)
        });
        self.assert_alive();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A free 127.0.0.1 port: its address and the `--port` option for it.
pub fn port_options() -> (String, Vec<String>) {
    let addr = format!("127.0.0.1:{}", super::free_port());
    (addr.clone(), vec![format!("--port={addr}")])
}

/// start_server as a `Command`, for tests that set it up themselves.
pub fn start_server_command() -> Command {
    Command::new(bin())
}

/// `start_server --status --json` against control socket `control` (what each generation and
/// worker costs and holds included).
pub fn status_json(control: &Path) -> serde_json::Value {
    let out = Command::new(bin())
        .arg("--status")
        .arg("--json")
        .arg(format!("--control={}", control.display()))
        .output()
        .expect("run start_server --status");
    assert!(
        out.status.success(),
        "--status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--status --json is JSON")
}
