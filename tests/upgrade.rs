//! Upgrading start_server in place (SIGUSR2, `--upgrade`): the binary at start_server's path is
//! replaced by another build (a copy of the binary under test with a build tag written into it,
//! so that it reports another version), and the running start_server becomes it without a
//! worker restarted, a socket reopened or a request failed; a broken replacement leaves it as it
//! was. A wrapper that holds the exec open (python, which neither reaps children nor unblocks
//! signals) lets signals and a worker's exit land in the middle of it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use common::*;

/// start_server installed in `tmp/bin` and started from there with a pid file, the HTTP worker
/// on a free port.
struct Installed {
    server: Server,
    binary: PathBuf,
    addr: String,
}

fn start_installed(tmp: &TempDir, extra: &[&str], env: &[(&str, String)]) -> Installed {
    fs::create_dir_all(tmp.path("bin")).unwrap();
    let binary = tmp.path("bin/start_server");
    install(&binary, &fs::read(bin()).unwrap());
    let (addr, port) = port_options();
    let mut command = Command::new(&binary);
    command
        .args(port)
        .arg(tmp.arg("--pid-file", "pid"))
        .arg(tmp.arg("--status-file", "status"))
        .args(extra)
        .arg("--")
        .arg(tmp.http_worker());
    let server = Server::spawn(command, env);
    wait_sole_generation(&tmp.path("status"), 1);
    served_by(&addr);
    Installed {
        server,
        binary,
        addr,
    }
}

/// `start_server --upgrade --pid-file=...`: its exit status and stderr.
fn upgrade(tmp: &TempDir) -> (bool, String) {
    let out = Command::new(bin())
        .arg("--upgrade")
        .arg(tmp.arg("--pid-file", "pid"))
        .output()
        .expect("run --upgrade");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sockets start_server holds (their inodes): the same sockets, not reopened ones.
fn socket_inodes(pid: i32) -> BTreeSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

fn exe(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

#[test]
fn an_upgrade_keeps_the_pid_the_workers_and_the_sockets_under_traffic() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    let pid = it.server.pid();
    let (worker, generation) = served_by(&it.addr);
    let sockets = socket_inodes(pid);
    let status = fs::read_to_string(tmp.path("status")).unwrap();
    let traffic = Traffic::start(&it.addr);
    wait_until("traffic to flow", || {
        (traffic.served.load(Ordering::SeqCst) > 5).then_some(())
    });

    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "--upgrade failed: {said}");
    assert!(said.contains(&new_version()), "{said}");

    wait_until("more traffic after the upgrade", || {
        (traffic.served.load(Ordering::SeqCst) > 20).then_some(())
    });
    let (served, failed) = traffic.finish();
    assert_eq!(failed, 0, "{failed} of {} requests failed", served + failed);
    assert!(alive(pid));
    assert_eq!(
        exe(pid),
        it.binary.display().to_string(),
        "runs the new file"
    );
    assert_eq!(served_by(&it.addr), (worker, generation), "same worker");
    assert_eq!(children(pid), [worker]);
    // Still every socket it had (a control client may come and go meanwhile).
    let now_held = socket_inodes(pid);
    assert!(sockets.is_subset(&now_held), "{sockets:?} vs {now_held:?}");
    assert_eq!(fs::read_to_string(tmp.path("status")).unwrap(), status);
    let report = fs::read_to_string(tmp.path("pid.upgrade")).unwrap();
    assert!(report.starts_with("OK ") && report.contains(&new_version()));
    it.server.wait_log(&format!(
        "upgraded from {} to {}",
        env!("CARGO_PKG_VERSION"),
        new_version()
    ));
    assert_eq!(
        fs::read_to_string(tmp.path("pid")).unwrap().trim(),
        pid.to_string()
    );

    // The new image supervises: a reload replaces the worker, a second upgrade works too.
    it.server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), generation + 1);
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "second --upgrade failed: {said}");
    it.server
        .wait_log(&format!("upgraded from {0} to {0}", new_version()));
}

#[test]
fn the_pid_file_keeps_its_lock_across_an_upgrade() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
    // A second start_server on the same pid file is refused: the lock is still held.
    let (status, log) = run(&args(&[
        &tmp.arg("--pid-file", "pid"),
        "--port=0",
        "--",
        "/bin/true",
    ]));
    assert!(!status.success());
    assert!(log.contains("is locked by a running start_server"), "{log}");
    assert!(alive(it.server.pid()));
}

/// The running start_server refuses `replacement`, says `why`, and runs on as before.
fn refused(tmp: &TempDir, it: &Installed, why: &str) {
    let pid = it.server.pid();
    let before_exe = exe(pid);
    let worker = served_by(&it.addr);
    let (ok, said) = upgrade(tmp);
    assert!(!ok, "--upgrade should fail");
    assert!(
        said.contains("upgrade failed") && said.contains(why),
        "{said}"
    );
    assert!(alive(pid));
    assert_eq!(exe(pid), before_exe, "still the old image");
    assert_eq!(served_by(&it.addr), worker);
    it.server.wait_log(why);
}

#[test]
fn a_missing_failing_or_incompatible_binary_leaves_the_old_one_running() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    fs::remove_file(&it.binary).unwrap();
    refused(&tmp, &it, "No such file or directory");

    install(&it.binary, b"#!/bin/sh\necho broken build >&2\nexit 1\n");
    refused(&tmp, &it, "broken build");

    install(
        &it.binary,
        b"#!/bin/sh\necho start_server 0.0.9\necho upgrade-state-formats: 1\n",
    );
    refused(
        &tmp,
        &it,
        "does not read upgrade state format 4 (it reads: [1])",
    );

    install(&it.binary, b"#!/bin/sh\nkill -SEGV $$\n");
    refused(&tmp, &it, "SIGSEGV");

    install(&it.binary, b"not a program at all");
    refused(&tmp, &it, "cannot run");

    // A binary that rejects the running options fails its check with its own words.
    install(
        &it.binary,
        b"#!/bin/sh\necho 'start_server: Unknown option: pid-file' >&2\nexit 2\n",
    );
    refused(&tmp, &it, "Unknown option: pid-file");

    // And it still reloads and upgrades once a good binary is there.
    it.server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
}

#[test]
fn upgrade_without_a_running_server_or_pid_file_is_an_error() {
    let tmp = TempDir::new();
    let (status, log) = run(&args(&["--upgrade"]));
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--upgrade needs --pid-file"), "{log}");
    let (status, log) = run(&args(&["--upgrade", &tmp.arg("--pid-file", "none")]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("failed to open pid file"), "{log}");
}

#[test]
fn upgrade_check_prints_the_version_and_the_state_formats() {
    let tmp = TempDir::new();
    let copy = tmp.path("start_server");
    install(&copy, &newer_build());
    let out = Command::new(&copy)
        .args(["--upgrade-check", "--port=8080", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("start_server {}", new_version())),
        "{text}"
    );
    assert!(text.contains("upgrade-state-formats: 1 2 3"), "{text}");
    let out = Command::new(&copy)
        .args(["--upgrade-check", "--port=nonsense", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A wrapper installed as start_server: it passes `--upgrade-check` straight to the new build,
/// but holds the exec itself (the process between the old image and the new one) until the
/// file `go` exists, after writing `execing`.
fn install_slow_exec(tmp: &TempDir, binary: &Path) {
    let new = tmp.path("bin/new_start_server");
    install(&new, &newer_build());
    let wrapper = format!(
        "#!/usr/bin/env python3\n\
         import os, sys, time\n\
         if len(sys.argv) > 1 and sys.argv[1].startswith('--upgrade-state='):\n\
         \x20   open('{execing}', 'w').close()\n\
         \x20   deadline = time.time() + 60\n\
         \x20   while not os.path.exists('{go}') and time.time() < deadline:\n\
         \x20       time.sleep(0.01)\n\
         os.execv('{new}', sys.argv)\n",
        execing = tmp.path("execing").display(),
        go = tmp.path("go").display(),
        new = new.display(),
    );
    install(binary, wrapper.as_bytes());
}

/// Starts an upgrade through the slow wrapper and returns once the exec is under way.
fn begin_slow_upgrade(tmp: &TempDir, it: &Installed) -> std::thread::JoinHandle<(bool, String)> {
    install_slow_exec(tmp, &it.binary);
    let tmp_path = tmp.0.clone();
    let client = std::thread::spawn(move || {
        let out = Command::new(bin())
            .arg("--upgrade")
            .arg(format!("--pid-file={}", tmp_path.join("pid").display()))
            .output()
            .expect("run --upgrade");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    wait_until("the exec to be under way", || {
        tmp.path("execing").exists().then_some(())
    });
    client
}

#[test]
fn a_hup_sent_during_the_exec_is_honoured_by_the_new_image() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    let (worker, _) = served_by(&it.addr);
    let client = begin_slow_upgrade(&tmp, &it);
    it.server.signal(libc::SIGHUP);
    fs::write(tmp.path("go"), "").unwrap();
    let (ok, said) = client.join().unwrap();
    assert!(ok, "{said}");
    let (_, new_worker) = wait_sole_generation(&tmp.path("status"), 2);
    assert_ne!(new_worker, worker);
    wait_until("the old worker to be reaped", || {
        reaped(worker).then_some(())
    });
    assert!(alive(it.server.pid()));
}

#[test]
fn a_term_sent_during_the_exec_stops_the_new_image_cleanly() {
    let tmp = TempDir::new();
    let mut it = start_installed(&tmp, &[], &[]);
    let (worker, _) = served_by(&it.addr);
    let client = begin_slow_upgrade(&tmp, &it);
    it.server.signal(libc::SIGTERM);
    fs::write(tmp.path("go"), "").unwrap();
    let status = it.server.wait_exit();
    assert!(status.success(), "{status:?}: {}", it.server.log());
    assert!(reaped(worker));
    assert!(!tmp.path("pid").exists() && !tmp.path("status").exists());
    // The client saw start_server go (upgraded first, or exited before it could say so).
    let (_, said) = client.join().unwrap();
    assert!(
        said.contains("upgraded") || said.contains("exited"),
        "{said}"
    );
}

#[test]
fn a_worker_that_exits_during_the_exec_is_reaped_and_replaced_by_the_new_image() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    let pid = it.server.pid();
    let (worker, _) = served_by(&it.addr);
    let client = begin_slow_upgrade(&tmp, &it);
    // SAFETY: kill(2) on the worker this test started.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    wait_until("the worker to wait as a zombie", || {
        zombies_among_children(pid).contains(&worker).then_some(())
    });
    fs::write(tmp.path("go"), "").unwrap();
    let (ok, said) = client.join().unwrap();
    assert!(ok, "{said}");
    wait_until("the worker to be reaped", || reaped(worker).then_some(()));
    it.server
        .wait_log(&format!("worker {worker} died unexpectedly"));
    let (_, replacement) = wait_sole_generation(&tmp.path("status"), 2);
    assert_ne!(replacement, worker);
    assert_eq!(served_by(&it.addr).0, replacement);
}

#[test]
fn an_upgrade_keeps_the_log_command_running() {
    let tmp = TempDir::new();
    let log = tmp.path("log");
    let it = start_installed(
        &tmp,
        &[&format!("--log-file=| cat >> {}", log.display())],
        &[],
    );
    let pid = it.server.pid();
    let logger: Vec<i32> = children(pid);
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
    wait_until("the new image to log through the same command", || {
        fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains(&format!("to {}", new_version())))
    });
    assert_eq!(children(pid), logger, "the same worker and log command");
}

#[test]
fn systemd_hears_a_reload_that_ends_with_the_new_version() {
    let tmp = TempDir::new();
    let systemd = NotifySocket::at_path(&tmp.path("notify"));
    let it = start_installed(&tmp, &[], &[("NOTIFY_SOCKET", systemd.address.clone())]);
    systemd.wait_for(&["READY=1"]);
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
    let done = systemd.wait_for(&["READY=1", "STATUS=upgraded to start_server"]);
    assert!(done.contains(&new_version()), "{done}");
    let all = systemd.all();
    let reloading = all
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .expect("RELOADING=1 before the exec");
    assert!(all[reloading].contains("MONOTONIC_USEC="), "{all:?}");
    let ready = all.iter().position(|m| m == &done).unwrap();
    assert!(reloading < ready, "{all:?}");
}

#[test]
fn an_upgrade_keeps_every_slot_of_a_generation_and_their_supervision() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &["--workers=3"], &[]);
    let pid = it.server.pid();
    let workers = wait_until("three workers", || {
        let mut kids = children(pid);
        kids.sort();
        (kids.len() == 3).then_some(kids)
    });
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
    let mut after = children(pid);
    after.sort();
    assert_eq!(after, workers, "every slot's worker kept");
    // The new image still knows each slot: a copy that dies is restarted in its slot.
    let (slot_zero, _) = served_by(&it.addr);
    let copy = *workers.iter().find(|&&w| w != slot_zero).unwrap();
    // SAFETY: kill(2) on a worker this test started.
    unsafe { libc::kill(copy, libc::SIGKILL) };
    it.server.wait_log(&format!("worker {copy} in slot"));
    wait_until("the slot to be filled again", || {
        let kids = children(pid);
        (kids.len() == 3 && !kids.contains(&copy)).then_some(())
    });
    assert!(reaped(copy));
}

/// One request on the control socket beside the pid file; the reply line.
fn control_request(tmp: &TempDir, request: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(tmp.path("pid.control"))
        .expect("connect to the control socket");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

/// `--status --json` of the server beside the pid file.
fn status_json(tmp: &TempDir) -> String {
    let out = Command::new(bin())
        .args(["--status", "--json"])
        .arg(tmp.arg("--pid-file", "pid"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A number field of `--status --json`'s output.
fn json_number(json: &str, field: &str) -> f64 {
    let at = json.find(&format!("\"{field}\": ")).expect(field) + field.len() + 4;
    json[at..]
        .split([',', '\n'])
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_control_socket_upgrade_is_answered_by_the_new_image_and_status_shows_it() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    let before = status_json(&tmp);
    assert!(before.contains(&format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION"))));
    // A client that has sent half a request when the upgrade happens is served by the new image.
    use std::io::{BufRead, BufReader, Write};
    let mut waiting = std::os::unix::net::UnixStream::connect(tmp.path("pid.control")).unwrap();
    waiting.write_all(b"{\"command\":").unwrap();

    install(&it.binary, &newer_build());
    let reply = control_request(&tmp, r#"{"command":"upgrade"}"#);
    assert!(reply.contains("\"ok\":true"), "{reply}");
    assert!(
        reply.contains(&format!("\"version\":\"{}\"", new_version())),
        "{reply}"
    );

    let after = status_json(&tmp);
    assert!(
        after.contains(&format!("\"version\": \"{}\"", new_version())),
        "{after}"
    );
    assert_eq!(json_number(&after, "pid"), f64::from(it.server.pid()));
    // Its uptime goes on from the first start, not from the exec.
    let started = |json: &str| json_number(json, "started_unix");
    assert!(
        (started(&after) - started(&before)).abs() < 1.0,
        "{before}\n{after}"
    );

    waiting.write_all(b"\"status\"}\n").unwrap();
    waiting
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(waiting).read_line(&mut line).unwrap();
    assert!(line.contains(&new_version()), "{line}");

    // A refused upgrade is answered by the old image with the reason.
    install(&it.binary, b"#!/bin/sh\nexit 1\n");
    let reply = control_request(&tmp, r#"{"command":"upgrade"}"#);
    assert!(
        reply.contains("\"ok\":false") && reply.contains("--upgrade-check failed"),
        "{reply}"
    );
}

#[test]
fn without_its_control_socket_upgrade_asks_by_signal_and_reads_the_pid_files_report() {
    let tmp = TempDir::new();
    let it = start_installed(&tmp, &[], &[]);
    fs::remove_file(tmp.path("pid.control")).unwrap();
    install(&it.binary, &newer_build());
    let (ok, said) = upgrade(&tmp);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("(pid:{}) upgraded", it.server.pid())),
        "{said}"
    );
    let report = fs::read_to_string(tmp.path("pid.upgrade")).unwrap();
    assert!(
        report.starts_with("OK ") && report.contains(&new_version()),
        "{report}"
    );
    install(&it.binary, b"#!/bin/sh\nexit 1\n");
    let (ok, said) = upgrade(&tmp);
    assert!(!ok && said.contains("--upgrade-check failed"), "{said}");
}
