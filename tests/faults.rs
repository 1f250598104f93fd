//! Faults around start_server: each is set up for real with an HTTP worker, and start_server must
//! survive it, keep serving, still reload on HUP, and (where writing can work again) say how
//! many log lines it lost.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{TempDir, served_by, wait_sole_generation, wait_until};

/// start_server with its stderr wherever the test puts it; its process group is killed on drop.
struct Supervised {
    child: Child,
}

impl Supervised {
    fn start(tmp: &TempDir, options: &[String], stderr: Stdio, command: &mut Command) -> Self {
        command
            .arg(tmp.arg("--status-file", "status"))
            .args(options)
            .arg("--")
            .arg(tmp.http_worker())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        Supervised {
            child: command.spawn().expect("spawn start_server"),
        }
    }

    fn hup(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    fn assert_alive(&mut self) {
        let exited = self.child.try_wait().expect("try_wait");
        assert!(exited.is_none(), "start_server died: {exited:?}");
    }

    /// Serves generation `generation` now, reloads on HUP to the next one, and is still alive.
    fn serves_and_reloads(&mut self, tmp: &TempDir, addr: &str, generation: u64) {
        wait_sole_generation(&tmp.path("status"), generation);
        assert_eq!(served_by(addr).1, generation);
        self.hup();
        wait_sole_generation(&tmp.path("status"), generation + 1);
        wait_until("the new generation to answer", || {
            common::http_get(addr)
                .ok()
                .filter(|body| common::parse_served(body).1 == generation + 1)
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

fn port_options() -> (String, Vec<String>) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    (addr.clone(), vec![format!("--port={addr}")])
}

/// Collects lines read from `source` in a thread.
fn collect(source: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

fn wait_text(text: &Mutex<String>, needle: &str) -> String {
    wait_until(&format!("{needle:?} in the log"), || {
        let text = text.lock().unwrap().clone();
        text.contains(needle).then_some(text)
    })
}

fn bin() -> Command {
    Command::new(common::bin())
}

#[test]
fn log_to_dev_full_drops_lines_and_keeps_serving() {
    let tmp = TempDir::new();
    let (addr, mut options) = port_options();
    options.push("--log-file=/dev/full".into());
    let mut server = Supervised::start(&tmp, &options, Stdio::null(), &mut bin());
    server.serves_and_reloads(&tmp, &addr, 1);
    server.serves_and_reloads(&tmp, &addr, 2);
}

#[test]
fn log_file_at_rlimit_fsize_drops_lines_then_reports_them() {
    let tmp = TempDir::new();
    let log = tmp.path("log");
    fs::write(&log, vec![b'x'; 4096]).unwrap();
    let (addr, mut options) = port_options();
    options.push(tmp.arg("--log-file", "log"));
    let mut command = bin();
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4096,
                rlim_max: 4096,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            Ok(())
        });
    }
    let mut server = Supervised::start(&tmp, &options, Stdio::null(), &mut command);
    server.serves_and_reloads(&tmp, &addr, 1);
    assert_eq!(fs::metadata(&log).unwrap().len(), 4096);
    // Room again (the file is appended to): the next line says what was lost.
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    server.serves_and_reloads(&tmp, &addr, 2);
    let text = wait_until("the lost lines reported", || {
        let text = fs::read_to_string(&log).ok()?;
        text.contains("log lines were lost").then_some(text)
    });
    assert!(text.contains("received HUP"), "{text}");
}

#[test]
fn stderr_reader_gone_drops_lines_then_reports_them() {
    let tmp = TempDir::new();
    let fifo = tmp.path("stderr");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let open_reader = || {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let reader = open_reader();
    let writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let (addr, options) = port_options();
    let mut server = Supervised::start(&tmp, &options, Stdio::from(writer), &mut bin());
    wait_sole_generation(&tmp.path("status"), 1);
    // The reader goes away: every line start_server writes now fails with EPIPE.
    drop(reader);
    server.serves_and_reloads(&tmp, &addr, 1);
    let reader = open_reader();
    clear_nonblock(&reader);
    let text = collect(reader);
    server.serves_and_reloads(&tmp, &addr, 2);
    wait_text(&text, "log lines were lost");
}

fn clear_nonblock(file: &impl AsRawFd) {
    // SAFETY: F_SETFL on our own fd.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
}

#[test]
fn stderr_pipe_nobody_reads_does_not_block_start_server() {
    let tmp = TempDir::new();
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A small pipe, filled up: nothing start_server writes fits until the test reads.
    // SAFETY: fcntl on our own fds.
    unsafe {
        libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
        libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut filler = fs::File::from(write.try_clone().unwrap());
    while filler.write(&[b'.'; 512]).is_ok() {}
    drop(filler);
    // SAFETY: start_server gets the blocking flag back, as a caller would give it.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, 0) };
    let (addr, options) = port_options();
    let mut server = Supervised::start(&tmp, &options, Stdio::from(write), &mut bin());
    server.serves_and_reloads(&tmp, &addr, 1);
    let text = collect(fs::File::from(read));
    server.serves_and_reloads(&tmp, &addr, 2);
    wait_text(&text, "log lines were lost");
}

#[test]
fn log_command_restarted_on_the_same_pipe_keeps_worker_output() {
    let tmp = TempDir::new();
    let (addr, mut options) = port_options();
    let (loggers, out) = (tmp.path("loggers"), tmp.path("out"));
    options.push(format!(
        "--log-file=| echo $$ >> {}; exec cat >> {}",
        loggers.display(),
        out.display()
    ));
    // The worker writes to its stdout (the log pipe) first, with SIGPIPE at its default.
    let worker = tmp.http_worker();
    let chatty = tmp.script(
        "chatty.sh",
        &format!(
            "#!/bin/sh\necho \"worker of generation $SERVER_STARTER_GENERATION says hello\"\n\
             exec {}\n",
            worker.display()
        ),
    );
    let mut command = bin();
    command
        .arg(tmp.arg("--status-file", "status"))
        .args(&options)
        .arg("--")
        .arg(&chatty)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut server = Supervised {
        child: command.spawn().unwrap(),
    };
    wait_sole_generation(&tmp.path("status"), 1);
    let first: i32 = wait_until("the log command's pid", || {
        fs::read_to_string(&loggers).ok()?.trim().parse().ok()
    });
    // SAFETY: kill(2) on the log command.
    unsafe { libc::kill(first, libc::SIGKILL) };
    server.serves_and_reloads(&tmp, &addr, 1);
    wait_until("a second log command", || {
        let pids = fs::read_to_string(&loggers).ok()?;
        (pids.lines().count() >= 2).then_some(())
    });
    let text = wait_until("the second worker's line read by the new command", || {
        let text = fs::read_to_string(&out).ok()?;
        text.contains("worker of generation 2 says hello")
            .then_some(text)
    });
    assert!(text.contains("the log command exited"), "{text}");
    server.assert_alive();
}
