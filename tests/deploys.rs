//! Deploys that know: `--ready=listening` sees unmodified servers (Starlet accepting in its
//! children, nginx and uvicorn in epoll) wait on the passed socket, so a reload needs no
//! `--interval`; `--bake` keeps the old generation serving beside the new one and rolls a new
//! one that fails meanwhile back, saying so to every client.
//!
//! No timing is asserted: an `--interval` far beyond the tests' patience shows that a generation
//! came up by being seen listening (or by `READY=1`), and the log says which.

mod common;

use std::fs;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::Value;

/// start_server on a free port of 127.0.0.1 with its pid and status files in `tmp`, `options`,
/// then `--` and `command`; and the address it serves.
fn start(
    tmp: &TempDir,
    options: &[&str],
    command: &[String],
    env: &[(&str, String)],
) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut a = vec![
        format!("--port={addr}"),
        tmp.arg("--pid-file", "pid"),
        tmp.arg("--status-file", "status"),
    ];
    a.extend(args(options));
    a.push("--".into());
    a.extend(command.iter().cloned());
    (Server::start(&a, env), addr)
}

/// `start_server --reload` (or another client command) against the server in `tmp`.
fn client(tmp: &TempDir, command: &str) -> (ExitStatus, String) {
    run(&args(&[
        command,
        &tmp.arg("--pid-file", "pid"),
        &tmp.arg("--status-file", "status"),
    ]))
}

/// `--status --json`.
fn status_json(tmp: &TempDir) -> Value {
    let out = output_within(
        start_server_command()
            .arg("--status")
            .arg("--json")
            .arg(tmp.arg("--pid-file", "pid")),
    );
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("--status --json is JSON")
}

/// The log line saying `pid` was seen listening, once there.
fn seen_listening(server: &Server, pid: i32) -> String {
    let needle = format!("new worker {pid} is listening (");
    let log = server.wait_log(&needle);
    log.lines()
        .find(|l| l.contains(&needle))
        .expect("the line")
        .to_string()
}

/// Reloads and checks that the new generation was up without waiting for `--interval` (600 s):
/// seen listening, as `how` says.
fn reloads_by_listening(tmp: &TempDir, server: &Server, addr: &str, how: &str) {
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    assert!(
        seen_listening(server, pid1).contains(how),
        "{}",
        server.log()
    );
    let (status, out) = client(tmp, "--reload");
    assert!(status.success(), "{out}\n{}", server.log());
    assert!(out.contains("reloaded: generation 2 is up"), "{out}");
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert!(
        seen_listening(server, pid2).contains(how),
        "{}",
        server.log()
    );
    assert_eq!(served_by(addr).1, 2);
    assert!(
        !server
            .log()
            .contains("was not seen waiting on a passed socket"),
        "{}",
        server.log()
    );
}

#[test]
fn starlet_is_seen_accepting_so_a_reload_waits_for_no_interval() {
    let tmp = TempDir::new();
    let app = tmp.psgi_app();
    // An --interval far beyond the test's patience: only being seen listening starts these.
    let (server, addr) = start(
        &tmp,
        &["--interval=600", "--ready=listening"],
        &starlet(&app),
        &[],
    );
    // Starlet's master forks the children that accept: a descendant of the worker counts.
    reloads_by_listening(&tmp, &server, &addr, "is in accept on fd 3)");
}

#[test]
fn nginx_is_seen_with_the_socket_in_its_epoll_set() {
    let tmp = TempDir::new();
    let port = free_port();
    let conf = |generation: u64| {
        // The server answers as the test workers do ($pid: the nginx worker's).
        format!(
            "worker_processes 2;\npid {pid};\nerror_log stderr;\nevents {{}}\nhttp {{\n  \
             access_log off;\n  server {{ listen 127.0.0.1:{port}; \
             return 200 \"pid=$pid gen={generation}\\n\"; }}\n}}\n",
            pid = tmp.path("nginx.pid").display()
        )
    };
    fs::write(tmp.path("nginx.conf"), conf(1)).unwrap();
    let command = args(&[
        "nginx",
        "-e",
        "stderr",
        "-c",
        &tmp.path("nginx.conf").display().to_string(),
        "-g",
        "daemon off;",
    ]);
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--pid-file", "pid"),
        tmp.arg("--status-file", "status"),
    ];
    // QUIT: nginx's graceful stop. NGINX: the sockets it inherits.
    a.extend(args(&[
        "--interval=600",
        "--ready=listening",
        "--signal-on-hup=QUIT",
    ]));
    a.push("--".into());
    a.extend(command);
    let server = Server::start(&a, &[("NGINX", "3;".into())]);
    let addr = format!("127.0.0.1:{port}");
    wait_sole_generation(&tmp.path("status"), 1);
    fs::write(tmp.path("nginx.conf"), conf(2)).unwrap();
    reloads_by_listening(&tmp, &server, &addr, "has fd 3 in its epoll set");
}

#[test]
fn uvicorn_is_seen_with_the_socket_in_its_epoll_set() {
    let tmp = TempDir::new();
    fs::write(tmp.path("asgi_app.py"), ASGI_APP).unwrap();
    let dir = tmp.arg("--dir", "");
    let (server, addr) = start(
        &tmp,
        &["--interval=600", "--ready=listening", &dir],
        &args(&[
            "/usr/bin/python3",
            "-m",
            "uvicorn",
            "--fd",
            "3",
            "--log-level",
            "warning",
            "asgi_app:app",
        ]),
        &[],
    );
    reloads_by_listening(&tmp, &server, &addr, "in its epoll set");
}

#[test]
fn a_worker_never_seen_listening_is_judged_by_the_interval_said_once() {
    let tmp = TempDir::new();
    // It holds the sockets and never waits on them.
    let worker = tmp.script("sleeper.sh", SLEEPER);
    let (server, _) = start(
        &tmp,
        &["--interval=0.3", "--ready=listening"],
        &[worker.display().to_string()],
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    server.signal(libc::SIGHUP);
    wait_sole_generation(&tmp.path("status"), 2);
    let log = server.log();
    assert_eq!(
        log.matches("was not seen waiting on a passed socket within --interval")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn under_ready_timeout_a_worker_listening_on_a_socket_of_its_own_fails_to_start() {
    let tmp = TempDir::new();
    let http = tmp.http_worker();
    // Generation 1 serves the passed socket; the next ones accept on a socket they made.
    let worker = tmp.script(
        "own_socket.sh",
        &format!(
            "#!/bin/sh\n[ \"$SERVER_STARTER_GENERATION\" = 1 ] && exec {}\n\
             exec /usr/bin/python3 -c 'import socket; s = socket.socket(); \
             s.bind((\"127.0.0.1\", 0)); s.listen(); s.accept()'\n",
            http.display()
        ),
    );
    let (server, addr) = start(
        &tmp,
        &["--interval=600", "--ready=listening", "--ready-timeout=1"],
        &[worker.display().to_string()],
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    let (status, out) = client(&tmp, "--reload");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "reload failed: generation 2 did not start (neither READY=1 nor listening within \
             1 sec); generation 1 is still serving"
        ),
        "{out}"
    );
    assert!(
        server.log().contains(
            "did not send READY=1 or listen on a passed socket within 1 sec, stopping it"
        )
    );
    assert_eq!(served_by(&addr), (pid1, 1));
}

/// The test worker behind a wrapper: it sends READY=1, and exits with status 1 a second after
/// it started while the file `bad` exists.
fn failing_while_bad(tmp: &TempDir) -> String {
    let worker = tmp.http_worker();
    tmp.script(
        "bakes.sh",
        &format!(
            "#!/bin/sh\nexport SEND_READY=1\n[ -e {} ] && export EXIT_AFTER=1\nexec {}\n",
            tmp.path("bad").display(),
            worker.display()
        ),
    )
    .display()
    .to_string()
}

#[test]
fn a_generation_failing_during_the_bake_is_rolled_back_while_the_old_one_serves_throughout() {
    let tmp = TempDir::new();
    let (server, addr) = start(
        &tmp,
        &["--interval=600", "--bake=3"],
        &[failing_while_bad(&tmp)],
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = {
        let (stop, addr) = (Arc::clone(&stop), addr.clone());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push(http_get(&addr).map_err(|e| e.to_string()));
            }
            answers
        })
    };
    fs::write(tmp.path("bad"), "").unwrap();
    let (status, out) = client(&tmp, "--reload");
    let log = server.log();
    let pid2: i32 = (log.lines())
        .filter_map(|l| l.strip_prefix("starting new worker "))
        .next_back()
        .and_then(|p| p.trim().parse().ok())
        .expect("generation 2's pid");
    assert_eq!(status.code(), Some(1), "{out}\n{log}");
    let outcome = format!(
        "rolled back: generation 2 failed during the bake: worker {pid2} exited, status:256 \
         (exit code 1)"
    );
    assert!(
        out.contains(&format!("{outcome}; generation 1 is still serving")),
        "{out}"
    );
    assert!(log.contains(&outcome), "{log}");
    assert!(
        log.contains("generation 2: it is up and bakes for 3 secs"),
        "{log}"
    );
    stop.store(true, Ordering::SeqCst);
    let answers = requests.join().unwrap();
    assert!(!answers.is_empty());
    for answer in &answers {
        assert!(answer.is_ok(), "a request failed: {answer:?}");
    }
    assert!(alive(pid1), "the old worker never stopped");
    assert_eq!(served_by(&addr), (pid1, 1));
    assert_eq!(status_entries(&tmp.path("status")), vec![(1, pid1)]);
    assert_eq!(
        fs::read_to_string(tmp.path("status.failed")).unwrap(),
        format!("2:{outcome}\n")
    );
    let reload = &status_json(&tmp)["last_reload"];
    assert_eq!(reload["result"], "rolled_back", "{reload}");
    // Serving, but the deploy failed: --check is healthy, --check --strict is not.
    let (check, out) = client(&tmp, "--check");
    assert!(check.success(), "{out}");
    let strict = output_within(
        start_server_command()
            .args(["--check", "--strict"])
            .arg(tmp.arg("--pid-file", "pid")),
    );
    let said = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "the reload to generation 2 was rolled back: {}",
            &outcome["rolled back: ".len()..]
        )),
        "{said}"
    );
}

#[test]
fn a_healthy_generation_takes_over_once_baked_and_the_reload_says_so() {
    let tmp = TempDir::new();
    let (server, addr) = start(
        &tmp,
        &["--interval=600", "--bake=1"],
        &[failing_while_bad(&tmp)],
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    let (status, out) = client(&tmp, "--reload");
    assert!(status.success(), "{out}");
    assert!(
        out.contains("reloaded: generation 2 is up (baked 1.0s)"),
        "{out}"
    );
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    assert!(!alive(pid1));
    let log = server.log();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {log}"))
    };
    assert!(at("generation 2: it is up and bakes for 1 sec") < at("generation 2 baked 1 sec"));
    assert!(
        at("generation 2 baked 1 sec")
            < at(&format!(
                "new worker is now running, sending TERM to old workers:{pid1}"
            )),
        "the old one is signalled once the bake is over"
    );
    assert_eq!(served_by(&addr), (pid2, 2));
}

#[test]
fn a_failing_canary_is_rolled_back_alone_and_the_old_slots_are_untouched() {
    let tmp = TempDir::new();
    let (_server, _) = start(
        &tmp,
        &["--interval=600", "--bake=2", "--workers=3", "--max-extra=1"],
        &[failing_while_bad(&tmp)],
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    let workers = |status: &Value| -> Vec<(u64, u64, i64, String)> {
        let mut list: Vec<_> = (status["workers"].as_array().unwrap().iter())
            .map(|w| {
                (
                    w["generation"].as_u64().unwrap(),
                    w["slot"].as_u64().unwrap(),
                    w["pid"].as_i64().unwrap(),
                    w["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        list.sort();
        list
    };
    let before = workers(&status_json(&tmp));
    assert_eq!(before.len(), 3, "{before:?}");
    fs::write(tmp.path("bad"), "").unwrap();
    let (status, out) = client(&tmp, "--reload");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("rolled back: generation 2 failed during the bake: worker "),
        "{out}"
    );
    let log = _server.log();
    assert!(
        log.contains("generation 2: its worker in slot 1 is up and bakes (the canary) for 2 secs"),
        "{log}"
    );
    assert!(
        !log.contains("rolling reload: slot"),
        "no old slot was replaced: {log}"
    );
    assert_eq!(
        workers(&status_json(&tmp)),
        before,
        "the same three workers"
    );
}

#[test]
fn during_a_bake_status_shows_it_check_is_healthy_and_restart_waits_for_the_outcome() {
    let tmp = TempDir::new();
    let (server, _) = start(
        &tmp,
        &["--interval=600", "--bake=600"],
        &[failing_while_bad(&tmp)],
        &[],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    let restart = {
        let (pid_file, status_file) = (
            tmp.arg("--pid-file", "pid"),
            tmp.arg("--status-file", "status"),
        );
        std::thread::spawn(move || run(&args(&["--restart", &pid_file, &status_file])))
    };
    server.wait_log("generation 2: it is up and bakes for 600 secs");
    let entries = status_entries(&tmp.path("status"));
    assert_eq!(entries.len(), 2, "both generations live: {entries:?}");
    let pid2 = entries[1].1;
    let summary = output_within(
        start_server_command()
            .arg("--status")
            .arg(tmp.arg("--pid-file", "pid")),
    );
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary.contains("healthy (generation 1 is up)"),
        "{summary}"
    );
    assert!(summary.contains("  2    baking    "), "{summary}");
    assert!(summary.contains("s of bake left)"), "{summary}");
    let generations = status_json(&tmp)["generations"].clone();
    assert_eq!(generations[1]["state"], "baking", "{generations}");
    assert!(
        generations[1]["bake_left"].as_f64().unwrap() > 60.0,
        "{generations}"
    );
    let (check, out) = client(&tmp, "--check");
    assert!(check.success(), "{out}");
    assert!(out.contains("ok: generation 1 is up"), "{out}");
    // The new generation dies: rolled back, and --restart says so.
    // SAFETY: kill(2) on a worker of this test's start_server.
    unsafe { libc::kill(pid2, libc::SIGKILL) };
    let (status, out) = restart.join().unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "restart failed: rolled back: generation 2 failed during the bake: worker {pid2} \
             exited, status:9 (killed by SIGKILL): generation 1 is still serving"
        )),
        "{out}"
    );
    assert_eq!(status_entries(&tmp.path("status")), vec![(1, pid1)]);
}
