//! Faults and hostile surroundings, each set up for real with a worker: start_server survives
//! them, keeps serving, still reloads on HUP, says how many log lines it lost (where writing can
//! work again), and touches only what is its own.

mod common;

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

// ---------------------------------------------------------------------------------------------
// Only what is ours is touched: processes workers leave behind, files planted as links.
// ---------------------------------------------------------------------------------------------

/// A worker wrapper: generation `helper_generation` first double-forks a long-lived helper (so
/// start_server adopts it) that writes its pid to `helper_pid`, then every generation runs the
/// HTTP worker, which sends READY=1 (so a generation starts only once its helper is adopted).
fn worker_forking_a_helper(tmp: &TempDir, helper_generation: u64, helper: &str) -> String {
    let worker = tmp.http_worker();
    tmp.script(
        "forks_helper.sh",
        &format!(
            "#!/bin/sh\nif [ \"$SERVER_STARTER_GENERATION\" = {helper_generation} ]; then\n  \
             ( {helper} & )\nfi\nSEND_READY=1 exec {}\n",
            worker.display()
        ),
    )
    .display()
    .to_string()
}

fn read_pid(path: &Path) -> i32 {
    wait_until(&format!("a pid in {}", path.display()), || {
        fs::read_to_string(path).ok()?.trim().parse().ok()
    })
}

/// The log line where start_server decided about adopted process `pid`.
fn decision_about(server: &Server, pid: i32) -> String {
    let needle = format!("process {pid} was left behind by");
    let log = server.wait_log(&needle);
    log.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_current_workers_helper_survives_an_old_worker_exiting() {
    let tmp = TempDir::new();
    let helper_pid = tmp.path("helper.pid");
    let helper = format!("sh -c 'echo $$ > {}; exec sleep 600'", helper_pid.display());
    let worker = worker_forking_a_helper(&tmp, 2, &helper);
    let port = free_port();
    let port_arg = format!("--port=127.0.0.1:{port}");
    let mut server = tmp.start_server(&[&port_arg, "--interval=600"], &[&worker], &[]);
    let (_, old) = wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    let helper = read_pid(&helper_pid);
    server.wait_log(&format!("old worker {old} died"));
    let decision = decision_about(&server, helper);
    assert!(decision.contains("left alone"), "{decision}");
    assert!(alive(helper));
    // Once generation 2's worker is gone too, its helper is a stray like any other.
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 3);
    server.wait_log(&format!(
        "process {helper} was left behind by a worker, sending TERM (generation 2, no longer running)"
    ));
    server.wait_log(&format!("process {helper} left behind by a worker exited"));
    assert!(!alive(helper));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
}

#[test]
fn at_shutdown_no_helper_of_a_live_generation_is_left() {
    let tmp = TempDir::new();
    let helper_pid = tmp.path("helper.pid");
    // A helper that ignores TERM: it gets KILL.
    let helper = format!(
        "python3 -c \"import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); \
         open('{}', 'w').write(str(os.getpid())); time.sleep(600)\"",
        helper_pid.display()
    );
    let worker = worker_forking_a_helper(&tmp, 1, &helper);
    let port = free_port();
    let port_arg = format!("--port=127.0.0.1:{port}");
    let mut server = tmp.start_server(&[&port_arg, "--interval=600"], &[&worker], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    let helper = read_pid(&helper_pid);
    server.signal(libc::SIGTERM);
    // Something had to be killed: exit status 3.
    assert_eq!(server.wait_exit().code(), Some(3));
    assert!(!alive(helper), "helper {helper} outlived start_server");
    let log = server.log();
    assert!(
        log.contains(&format!("sending KILL:[{helper}]")),
        "no KILL for the helper:\n{log}"
    );
}

/// A file the test owns, and a link to it at `name` in `dir`, made by `as_user` if given (as
/// another user might plant one).
fn plant_link(dir: &Path, name: &str, as_user: Option<u32>) -> PathBuf {
    let target = dir.join(format!("{name}.target"));
    fs::write(&target, "not start_server's\n").unwrap();
    let link = dir.join(name);
    match as_user {
        None => std::os::unix::fs::symlink(&target, &link).unwrap(),
        Some(uid) => {
            let status = Command::new("setpriv")
                .args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "ln",
                    "-s",
                ])
                .arg(&target)
                .arg(&link)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    target
}

fn untouched(target: &Path, link: &Path) {
    assert_eq!(fs::read_to_string(target).unwrap(), "not start_server's\n");
    assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
}

/// A directory `name` in `tmp` with `mode`.
fn shared_dir(tmp: &TempDir, name: &str, mode: u32) -> PathBuf {
    let dir = tmp.path(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// start_server with `option` naming a link planted in `dir` refuses to start, saying `expected`.
fn refused(dir: &Path, as_user: Option<u32>, option: &str, expected: &str) {
    let name = "app.file";
    let target = plant_link(dir, name, as_user);
    let link = dir.join(name);
    let port = free_port();
    let (status, log) = run(&args(&[
        &format!("--port=127.0.0.1:{port}"),
        &format!("{option}={}", link.display()),
        "--",
        "/bin/sleep",
        "600",
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(expected), "{log}");
    untouched(&target, &link);
}

/// The refusal of a link planted at `what`'s `link`, `why`.
fn link_refusal(what: &str, link: &Path, why: &str) -> String {
    format!(
        "refusing to open {what} {}: it is a symbolic link {why}",
        link.display()
    )
}

/// Refused in a directory anyone can write to; as root, also another user's link in a sticky
/// directory such as /tmp.
/// (The pid file, which start_server also removes at exit, is refused in such a directory
/// whatever is at its name.)
fn refused_where_planted(option: &str, what: &str) {
    let tmp = TempDir::new();
    let open = shared_dir(&tmp, "open", 0o777);
    let link = open.join("app.file");
    let expected = if option == "--pid-file" {
        format!("{} is writable by other users", open.display())
    } else {
        let why = format!("in {}, which other users can write to", open.display());
        link_refusal(what, &link, &why)
    };
    refused(&open, None, option, &expected);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let sticky = shared_dir(&tmp, "sticky", 0o1777);
        let link = sticky.join("app.file");
        let expected = link_refusal(what, &link, "owned by uid 65534");
        refused(&sticky, Some(65534), option, &expected);
    }
}

#[test]
fn a_link_planted_at_the_pid_file_is_refused() {
    refused_where_planted("--pid-file", "pid file");
}

#[test]
fn a_link_planted_at_the_log_file_is_refused() {
    refused_where_planted("--log-file", "log file");
}

#[test]
fn the_status_file_is_not_written_through_planted_links() {
    let tmp = TempDir::new();
    let go = tmp.path("go");
    let worker = tmp.http_worker();
    let waits = tmp.script(
        "waits.sh",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.05; done\nSEND_READY=1 exec {}\n",
            go.display(),
            worker.display()
        ),
    );
    let port = free_port();
    let port_arg = format!("--port=127.0.0.1:{port}");
    let mut server = tmp.start_server(
        &[&port_arg, "--interval=600"],
        &[&waits.display().to_string()],
        &[],
    );
    // The predictable temporary name, and the status file's own name.
    let temp_name = format!("status.{}", server.pid());
    let temp_target = plant_link(&tmp.0, &temp_name, None);
    let final_target = plant_link(&tmp.0, "status", None);
    fs::write(&go, "").unwrap();
    let (generation, pid) = wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(generation, 1);
    assert_eq!(
        fs::read_to_string(tmp.path("status")).unwrap(),
        format!("1:{pid}\n")
    );
    assert!(fs::symlink_metadata(tmp.path("status")).unwrap().is_file());
    untouched(&temp_target, &tmp.path(&temp_name));
    assert_eq!(
        fs::read_to_string(&final_target).unwrap(),
        "not start_server's\n"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    untouched(&temp_target, &tmp.path(&temp_name));
}

/// A FIFO at `path`, as another user could plant one where they can write.
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// start_server with `option` naming a FIFO exits 1 at once, saying what it is: the open never
/// waits for a partner that will not come.
fn fifo_refused(option: &str, what: &str) {
    let tmp = TempDir::new();
    let fifo = tmp.path("app.file");
    mkfifo(&fifo);
    let port = free_port();
    let (status, log) = run(&args(&[
        &format!("--port=127.0.0.1:{port}"),
        &format!("{option}={}", fifo.display()),
        "--",
        "/bin/sleep",
        "600",
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "refusing to open {what} {}: it is a FIFO (named pipe), not a regular file",
        fifo.display()
    );
    assert!(log.contains(&expected), "{log}");
}

#[test]
fn a_fifo_at_the_log_file_is_refused_not_waited_on() {
    fifo_refused("--log-file", "log file");
}

#[test]
fn a_fifo_at_the_pid_file_is_refused() {
    fifo_refused("--pid-file", "pid file");
}

#[test]
fn log_file_dev_stdout_on_a_pipe_still_works() {
    // The worker's output goes to the log file, here start_server's own stdout pipe.
    use std::io::BufRead;
    let port = free_port();
    let mut child = Command::new(bin())
        .args([
            &format!("--port=127.0.0.1:{port}"),
            "--log-file=/dev/stdout",
            "--",
            "/bin/sh",
            "-c",
            "echo worker-says-hi; exec sleep 600",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // EOF (start_server refused the pipe and exited) ends the search with None.
    let started = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("worker-says-hi"));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(started.is_some(), "nothing logged to the pipe: {status:?}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_fifo_in_the_envdir_is_refused_at_start_up() {
    let tmp = TempDir::new();
    let envdir = tmp.path("env");
    fs::create_dir(&envdir).unwrap();
    mkfifo(&envdir.join("FOO"));
    let port = free_port();
    let (status, log) = run(&args(&[
        &format!("--port=127.0.0.1:{port}"),
        &format!("--envdir={}", envdir.display()),
        "--",
        "/bin/sleep",
        "600",
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!(
        "refusing envdir entry {}: it is a FIFO (named pipe), not a regular file (remove it)",
        envdir.join("FOO").display()
    );
    assert!(log.contains(&expected), "{log}");
}

#[test]
fn a_fifo_planted_in_the_envdir_later_is_skipped_and_reloads_go_on() {
    let tmp = TempDir::new();
    let envdir = tmp.path("env");
    fs::create_dir(&envdir).unwrap();
    fs::write(envdir.join("MODE"), "kept\n").unwrap();
    let worker = tmp.http_worker();
    let ready = tmp.script(
        "ready.sh",
        &format!("#!/bin/sh\nSEND_READY=1 exec {}\n", worker.display()),
    );
    let port = free_port();
    let port_arg = format!("--port=127.0.0.1:{port}");
    let envdir_arg = format!("--envdir={}", envdir.display());
    let mut server = tmp.start_server(
        &[&port_arg, &envdir_arg, "--interval=600"],
        &[&ready.display().to_string()],
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    let fifo = envdir.join("FOO");
    mkfifo(&fifo);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    server.wait_log(&format!(
        "refusing envdir entry {}: it is a FIFO (named pipe), not a regular file (remove it); \
         skipped",
        fifo.display()
    ));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// End of: only what is ours is touched.
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Logging never kills start_server.
// ---------------------------------------------------------------------------------------------

#[test]
fn log_to_dev_full_drops_lines_and_keeps_serving() {
    let tmp = TempDir::new();
    let (addr, mut options) = port_options();
    options.push("--log-file=/dev/full".into());
    let mut server = Supervised::start(&tmp, &options, Stdio::null(), &mut start_server_command());
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
    let mut command = start_server_command();
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
    let mut server = Supervised::start(
        &tmp,
        &options,
        Stdio::from(writer),
        &mut start_server_command(),
    );
    wait_sole_generation(&tmp.path("status"), 1);
    // The reader goes away: every line start_server writes now fails with EPIPE.
    drop(reader);
    server.serves_and_reloads(&tmp, &addr, 1);
    let reader = open_reader();
    clear_nonblock(&reader);
    let text = Collected::start(reader);
    server.serves_and_reloads(&tmp, &addr, 2);
    text.wait_for("log lines were lost");
}

/// A worker's stderr is left as start_server's caller gave it: blocking.
fn assert_blocking_stderr(worker: i32) {
    let info = fs::read_to_string(format!("/proc/{worker}/fdinfo/2")).unwrap();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
        .unwrap();
    assert_eq!(flags & libc::O_NONBLOCK, 0, "worker's fd 2: {info}");
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
    let mut server = Supervised::start(
        &tmp,
        &options,
        Stdio::from(write),
        &mut start_server_command(),
    );
    server.serves_and_reloads(&tmp, &addr, 1);
    assert_blocking_stderr(wait_sole_generation(&tmp.path("status"), 2).1);
    let text = Collected::start(fs::File::from(read));
    server.serves_and_reloads(&tmp, &addr, 2);
    text.wait_for("log lines were lost");
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
    let mut command = start_server_command();
    command
        .arg(tmp.arg("--status-file", "status"))
        .args(&options)
        .arg("--")
        .arg(&chatty)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut server = Supervised::wrap(command.spawn().unwrap());
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

/// A stand-in journald on /run/systemd/journal/socket (in a mount namespace of its own) that
/// starts start_server with stderr as its "journal stream", stops reading when the file `stall`
/// appears (and fills its queue up, as a stuck journald's is), and reads again, appending the
/// entries' fields to `journal`, once `drain` appears.
const STALLING_JOURNAL: &str = common::workers::STALLING_JOURNAL;

#[test]
fn journald_that_stops_reading_does_not_block_start_server() {
    let tmp = TempDir::new();
    let script = tmp.script("journal.py", STALLING_JOURNAL);
    let (addr, options) = port_options();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = Command::new("unshare");
    command
        .arg(if root { "-m" } else { "-rm" })
        .args([
            "sh",
            "-c",
            r#"mount -t tmpfs tmpfs /run && exec "$@""#,
            "sh",
        ])
        .arg(&script)
        .arg(&tmp.0)
        .arg(common::bin())
        .arg(tmp.arg("--status-file", "status"))
        .args(&options)
        .arg("--")
        .arg(tmp.http_worker())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut server = Supervised::wrap(command.spawn().expect("run unshare"));
    server.pid = wait_until("start_server's pid", || {
        fs::read_to_string(tmp.path("pid")).ok()?.parse().ok()
    });
    let journal = |needle: &str| {
        wait_until(&format!("{needle:?} in the journal"), || {
            let text = fs::read_to_string(tmp.path("journal")).ok()?;
            text.contains(needle).then_some(text)
        })
    };
    wait_sole_generation(&tmp.path("status"), 1);
    journal("MESSAGE=starting new worker");
    fs::write(tmp.path("stall"), "").unwrap();
    wait_until("the journal to be stuck", || {
        tmp.path("stalled").exists().then_some(())
    });
    server.serves_and_reloads(&tmp, &addr, 1);
    fs::write(tmp.path("drain"), "").unwrap();
    server.serves_and_reloads(&tmp, &addr, 2);
    let text = journal("log lines were lost");
    assert!(text.contains("SYSLOG_IDENTIFIER=start_server"), "{text}");
    let stderr = fs::read_to_string(tmp.path("stderr")).unwrap_or_default();
    assert!(!stderr.contains("received HUP"), "{stderr}");
}

#[test]
fn stderr_socket_nobody_reads_does_not_block_start_server() {
    let tmp = TempDir::new();
    let (reader, stderr) = std::os::unix::net::UnixStream::pair().unwrap();
    // Small buffers, filled: nothing start_server writes fits until the test reads.
    for (socket, option) in [(&stderr, libc::SO_SNDBUF), (&reader, libc::SO_RCVBUF)] {
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt with a valid int option.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    stderr.set_nonblocking(true).unwrap();
    while (&stderr).write(&[b'.'; 512]).is_ok() {}
    stderr.set_nonblocking(false).unwrap();
    let (addr, options) = port_options();
    let mut server = Supervised::start(
        &tmp,
        &options,
        Stdio::from(OwnedFd::from(stderr)),
        &mut start_server_command(),
    );
    server.serves_and_reloads(&tmp, &addr, 1);
    assert_blocking_stderr(wait_sole_generation(&tmp.path("status"), 2).1);
    let text = Collected::start(reader);
    server.serves_and_reloads(&tmp, &addr, 2);
    text.wait_for("log lines were lost");
}

// ---------------------------------------------------------------------------------------------
// Crash loops and misbehaving workers: a worker that exits at once with --interval=0, a worker
// that ignores TERM, a worker that forks a thousand children, a worker that closes fds 0-2.
// ---------------------------------------------------------------------------------------------

/// The HTTP worker with a shell prologue run first (in the shell that then execs it).
fn worker_after(tmp: &TempDir, name: &str, prologue: &str) -> std::path::PathBuf {
    let worker = tmp.http_worker();
    tmp.script(
        name,
        &format!("#!/bin/sh\n{prologue}\nexec {}\n", worker.display()),
    )
}

#[test]
fn a_crash_loop_with_interval_zero_backs_off_and_says_so() {
    let tmp = TempDir::new();
    let systemd = NotifySocket::at_path(&tmp.path("systemd.sock"));
    let crash = tmp.script("crash.sh", "#!/bin/sh\nexit 0\n");
    let mut server = tmp.start_server(
        &["--interval=0", "--max-restart-delay=2"],
        &[&crash.display().to_string()],
        &[("NOTIFY_SOCKET", systemd.address.clone())],
    );
    // Without backoff this is reached never (the count restarts at every "successful" start)
    // and thousands of workers a second are spawned; with it, after a handful of attempts.
    let log = server.wait_log("failed starts in a row: backing off, 0.8 secs more");
    let spawned = log.matches("starting new worker").count();
    assert!(
        spawned < 30,
        "{spawned} spawns before an 0.8 s backoff:\n{log}"
    );
    assert_eq!(
        log.matches("backing off, 0.4 secs more").count(),
        1,
        "logged once per change:\n{log}"
    );
    systemd.wait_for(&[
        "STATUS=no worker serving: ",
        "STATUS=no worker serving: 7 failed",
    ]);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

/// A worker that says READY=1, then sends `count` different STATUS= lines without waiting and
/// writes `done` when it is through.
fn chatty_worker(tmp: &TempDir, count: u32, done: &Path) -> PathBuf {
    tmp.script(
        "chatty.py",
        &format!(
            "#!/usr/bin/env python3\nimport os, socket, time\n\
             addr = os.environ['NOTIFY_SOCKET']\n\
             addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
             s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
             def say(m):\n    try:\n        s.sendto(m.encode(), socket.MSG_DONTWAIT, addr)\n\
             \x20   except OSError:\n        time.sleep(0.001)\n\
             say('READY=1')\n\
             for i in range({count}):\n    say('STATUS=busy %d' % i)\n\
             open('{}', 'w').close()\n\
             while True:\n    time.sleep(1)\n",
            done.display()
        ),
    )
}

#[test]
fn a_systemd_that_does_not_read_does_not_stop_start_server() {
    let tmp = TempDir::new();
    // Bound and never read: its queue fills up after a few hundred messages.
    let _deaf = std::os::unix::net::UnixDatagram::bind(tmp.path("systemd.sock")).unwrap();
    let done = tmp.path("done");
    let worker = chatty_worker(&tmp, 5000, &done);
    let mut server = tmp.start_server(
        &["--interval=600"],
        &[&worker.display().to_string()],
        &[(
            "NOTIFY_SOCKET",
            tmp.path("systemd.sock").display().to_string(),
        )],
    );
    wait_until("the worker to send its lines", || {
        done.exists().then_some(())
    });
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    let log = server.log();
    assert!(
        log.matches("systemd's notification socket is full").count() <= 1,
        "said once, not per message:\n{log}"
    );
}

#[test]
fn a_worker_ignoring_term_is_killed_after_kill_old_timeout() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "deaf.sh", "trap '' TERM");
    let server = tmp.start_server(
        &[
            &format!("--port=127.0.0.1:{port}"),
            "--interval=0.3",
            "--kill-old-timeout=1",
        ],
        &[&worker.display().to_string()],
        &[("STOP_SIGNALS", "SIGUSR2".into())],
    );
    let (pid1, _) = served_by(&addr);
    server.signal(libc::SIGHUP);
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    let log = server.wait_log(&format!("old worker {pid1} died"));
    assert!(
        log.contains(&format!(
            "workers still alive after their signal, sending KILL:{pid1}"
        )),
        "{log}"
    );
    assert!(!alive(pid1));
    assert_eq!(served_by(&addr).0, pid2);
}

#[test]
fn a_worker_ignoring_term_is_waited_for_without_blocking_reloads() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "deaf.sh", "trap '' TERM");
    let server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=0.3"],
        &[&worker.display().to_string()],
        &[("STOP_SIGNALS", "SIGUSR2".into())],
    );
    let (pid1, _) = served_by(&addr);
    server.signal(libc::SIGHUP);
    server.wait_log(&format!("killing old workers:{pid1}"));
    // Like the original: still alive, still listed, waited for; and reloads go on.
    server.signal(libc::SIGHUP);
    let status = tmp.path("status");
    // (Generation 2 ignores TERM too once generation 3 serves.)
    let entries = wait_until("generations 1, 2 and 3 listed", || {
        let entries = status_entries(&status);
        (entries.len() == 3 && entries[2].0 == 3).then_some(entries)
    });
    assert_eq!(entries[0], (1, pid1));
    assert!(alive(pid1) && alive(entries[1].1));
    // All three still hold the listening socket: any of them may answer.
    let (pid, generation) = served_by(&addr);
    assert!(entries.contains(&(generation, pid)), "{entries:?}");
}

#[test]
fn a_worker_forking_a_thousand_children_does_not_hold_start_server() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let children = tmp.path("children");
    let worker = worker_after(
        &tmp,
        "forker.sh",
        &format!(
            "if [ \"$SERVER_STARTER_GENERATION\" = 1 ]; then\n\
             for i in $(seq 1000); do sleep 1000 & echo $! >> {0}; done\n\
             echo done >> {0}\nfi",
            children.display()
        ),
    );
    let mut server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=0.3"],
        &[&worker.display().to_string()],
        &[],
    );
    let (pid1, _) = served_by(&addr);
    let pids: Vec<i32> = wait_until("the thousand children", || {
        let text = std::fs::read_to_string(&children).ok()?;
        text.ends_with("done\n")
            .then(|| text.lines().filter_map(|l| l.parse().ok()).collect())
    });
    assert_eq!(pids.len(), 1000);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    server.wait_log(&format!("old worker {pid1} died"));
    // What the old worker left behind is stopped and reaped; start_server goes on.
    wait_until("the children left behind to be gone", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    server.signal(libc::SIGHUP);
    let (_, pid3) = wait_sole_generation(&tmp.path("status"), 3);
    assert_eq!(served_by(&addr), (pid3, 3));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn a_worker_closing_fds_0_to_2_is_supervised_as_any_other() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = worker_after(&tmp, "closer.sh", "exec 0<&- 1>&- 2>&-");
    let mut server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}"), "--interval=30"],
        &[&worker.display().to_string()],
        &[("SEND_READY", "1".into())],
    );
    // READY=1 (from a socket that got fd 0) promotes it well before --interval=30.
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    assert_eq!(served_by(&addr).0, pid1);
    server.signal(libc::SIGHUP);
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(served_by(&addr).0, pid2);
    server.wait_log(&format!("old worker {pid1} died"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
}
