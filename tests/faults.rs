//! Faults and hostile surroundings: start_server survives them, and touches only what is its own.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// start_server with `option` naming a link planted in `dir` refuses to start, saying `why`.
fn refused(dir: &Path, as_user: Option<u32>, option: &str, what: &str, why: &str) {
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
    let expected = format!(
        "refusing to open {what} {}: it is a symbolic link {why}",
        link.display()
    );
    assert!(log.contains(&expected), "{log}");
    untouched(&target, &link);
}

/// Refused in a directory anyone can write to; as root, also another user's link in a sticky
/// directory such as /tmp.
fn refused_where_planted(option: &str, what: &str) {
    let tmp = TempDir::new();
    let open = shared_dir(&tmp, "open", 0o777);
    let why = format!("in {}, which other users can write to", open.display());
    refused(&open, None, option, what, &why);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let sticky = shared_dir(&tmp, "sticky", 0o1777);
        refused(&sticky, Some(65534), option, what, "owned by uid 65534");
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

// ---------------------------------------------------------------------------------------------
// End of: only what is ours is touched.
// ---------------------------------------------------------------------------------------------
