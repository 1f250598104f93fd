//! The control socket (`--control`), the commands that use it (`--status`, `--reload`,
//! `--check`) and `--reload-on-change`, with real workers.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// start_server with the HTTP worker, a pid file (`pid`), a status file (`status`) and
/// `extra` options.
fn serving(tmp: &TempDir, port: u16, extra: &[&str], env: &[(&str, String)]) -> Server {
    let mut options = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--pid-file", "pid"),
        "--interval=0.2".to_string(),
    ];
    options.extend(args(extra));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let worker = tmp.http_worker().display().to_string();
    tmp.start_server(&options, &[&worker], env)
}

/// One connection to the control socket.
struct Control {
    reader: BufReader<UnixStream>,
}

impl Control {
    fn connect(path: &Path) -> Control {
        let stream = wait_until("the control socket", || UnixStream::connect(path).ok());
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Control {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `line` (a newline is added) and reads one reply.
    fn ask(&mut self, line: &str) -> Value {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("bad reply {reply:?}: {e}"))
    }
}

/// `start_server OPTIONS` as a client; its output.
fn client(options: &[String]) -> Output {
    Command::new(bin()).args(options).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_reply_is_complete_json_and_bad_requests_get_errors() {
    let tmp = TempDir::new();
    let port = free_port();
    let server = serving(&tmp, port, &[&tmp.arg("--control", "ctl")], &[]);
    let (worker_pid, _) = served_by(&format!("127.0.0.1:{port}"));
    wait_sole_generation(&tmp.path("status"), 1);
    let mut control = Control::connect(&tmp.path("ctl"));

    let bad = control.ask("this is not json");
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"].as_str().unwrap().contains("bad request"),
        "{bad}"
    );
    let unknown = control.ask(r#"{"command":"launch_missiles"}"#);
    assert_eq!(unknown["ok"], false);
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("launch_missiles")
    );

    // The same connection goes on.
    let reply = control.ask(r#"{"command":"status"}"#);
    assert_eq!(reply["ok"], true, "{reply}");
    let status = &reply["status"];
    assert_eq!(status["pid"], server.pid());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime"].as_f64().unwrap() > 0.0);
    assert!(status["started_unix"].as_f64().unwrap() > 1.6e9);
    let socket = &status["sockets"][0];
    assert_eq!(socket["key"], format!("127.0.0.1:{port}"));
    assert_eq!(socket["address"], format!("127.0.0.1:{port}"));
    assert_eq!(socket["fd"], 3);
    assert_eq!(socket["origin"], "bound");
    let generations = status["generations"].as_array().unwrap();
    assert_eq!(generations.len(), 1, "{status}");
    assert_eq!(generations[0]["number"], 1);
    assert_eq!(generations[0]["state"], "up");
    assert!(generations[0]["since_ago"].as_f64().unwrap() >= 0.0);
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status}");
    assert_eq!(workers[0]["pid"], worker_pid);
    assert_eq!(workers[0]["slot"], 0);
    assert_eq!(workers[0]["generation"], 1);
    assert_eq!(workers[0]["state"], "up");
    assert_eq!(workers[0]["restarts"], 0);
    assert_eq!(workers[0]["predecessors"], Value::Array(vec![]));
    assert_eq!(status["crash_loop"], false);
    assert_eq!(status["stopping"], false);
    assert_eq!(status["backoff"], Value::Null);
    assert_eq!(status["log_lines_dropped"], 0);

    let workers = control.ask(r#"{"command":"workers","count":-3}"#);
    assert_eq!(workers["ok"], false);
}

#[test]
fn status_prints_a_summary_or_json_and_status_with_a_value_is_the_status_file() {
    let tmp = TempDir::new();
    let port = free_port();
    // The original's abbreviation: --status=FILE is --status-file=FILE.
    let _server = Server::start(
        &args(&[
            &format!("--port=127.0.0.1:{port}"),
            &tmp.arg("--pid-file", "pid"),
            &format!("--status={}", tmp.path("gens").display()),
            "--interval=0.2",
            "--",
            &tmp.http_worker().display().to_string(),
        ]),
        &[],
    );
    let (_, pid) = wait_sole_generation(&tmp.path("gens"), 1);

    // Bare --status is the command; the socket is found from the pid file.
    let human = client(&args(&["--status", &tmp.arg("--pid-file", "pid")]));
    assert!(human.status.success(), "{}", text(&human.stderr));
    let summary = text(&human.stdout);
    assert!(
        summary.contains("healthy (generation 1 is up)"),
        "{summary}"
    );
    assert!(summary.contains(&format!("127.0.0.1:{port}")), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().take(4).collect::<Vec<_>>()
                == [pid.to_string().as_str(), "0", "1", "up"]),
        "{summary}"
    );

    let json = client(&args(&[
        "--status",
        "--json",
        &tmp.arg("--pid-file", "pid"),
    ]));
    assert!(json.status.success(), "{}", text(&json.stderr));
    let status: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(status["workers"][0]["pid"], pid);
    assert_eq!(status["generations"][0]["state"], "up");

    // A reader that stopped reading (`--status | grep -q up` under `set -o pipefail`) has what
    // it wanted: no error, exit 0.
    for command in ["--status", "--metrics"] {
        let mut child = Command::new(bin())
            .args([command, &tmp.arg("--pid-file", "pid")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "{command}");
    }
}

#[test]
fn reload_exits_0_when_the_new_generation_is_up_and_1_when_it_failed() {
    let tmp = TempDir::new();
    let port = free_port();
    let fail = tmp.path("fail");
    let _server = serving(
        &tmp,
        port,
        &[],
        &[("FAIL_IF_EXISTS", fail.display().to_string())],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    let pid_file = tmp.arg("--pid-file", "pid");

    let ok = client(&args(&["--reload", &pid_file]));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stderr).contains("generation 2 is up"));
    // The reply comes once generation 2 is up; generation 1 is then on its way out.
    wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")).1, 2);

    std::fs::write(&fail, "").unwrap();
    let failed = client(&args(&["--reload", &pid_file]));
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let why = text(&failed.stderr);
    assert!(
        why.contains("generation 3 did not start") && why.contains("generation 2 is still serving"),
        "{why}"
    );
    // The old generation serves: healthy.
    assert_eq!(served_by(&format!("127.0.0.1:{port}")).1, 2);
    let check = client(&args(&["--check", &pid_file]));
    assert!(check.status.success(), "{}", text(&check.stderr));
    let mut control = Control::connect(&tmp.path("pid.control"));
    let last = control.ask(r#"{"command":"status"}"#)["status"]["last_reload"].clone();
    assert_eq!(last["trigger"], "control", "{last}");
    assert_eq!(last["generation"], 3);
    assert_eq!(last["result"], "failed");
    assert!(last["reason"].as_str().unwrap().contains("exit"), "{last}");
    assert!(last["duration"].as_f64().unwrap() >= 0.0);
}

#[test]
fn check_fails_without_a_server_while_starting_and_in_a_crash_loop() {
    let tmp = TempDir::new();
    let nobody = client(&args(&["--check", &tmp.arg("--control", "nothing")]));
    assert_eq!(nobody.status.code(), Some(1));
    assert!(text(&nobody.stderr).contains("cannot connect"));
    let neither = client(&args(&["--check"]));
    assert_eq!(neither.status.code(), Some(2), "{}", text(&neither.stderr));
    assert!(text(&neither.stderr).contains("give --control=PATH"));
    let json_alone = client(&args(&["--json"]));
    assert_eq!(json_alone.status.code(), Some(2));
    assert!(text(&json_alone.stderr).contains("--status --json"));

    // Starting: the worker never says READY=1 and only READY=1 counts.
    let flag = tmp.path("ready");
    let port = free_port();
    let worker = tmp.http_worker_ready_while(&flag).display().to_string();
    let ctl = tmp.arg("--control", "ctl");
    let mut starting = tmp.start_server(
        &[
            &format!("--port=127.0.0.1:{port}"),
            &ctl,
            "--ready-timeout=600",
        ],
        &[&worker],
        &[],
    );
    wait_until("the first worker", || {
        http_get(&format!("127.0.0.1:{port}")).ok()
    });
    let check = client(&args(&["--check", &ctl]));
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check.stderr).contains("no generation is up"));
    starting.signal(libc::SIGTERM);
    starting.wait_exit();

    // Up, then a crash loop: the serving worker dies and every replacement fails.
    let fail = tmp.path("fail");
    let port = free_port();
    let _server = serving(
        &tmp,
        port,
        &[&ctl],
        &[("FAIL_IF_EXISTS", fail.display().to_string())],
    );
    let (pid, _) = served_by(&format!("127.0.0.1:{port}"));
    wait_until("a healthy check", || {
        client(&args(&["--check", &ctl]))
            .status
            .success()
            .then_some(())
    });
    std::fs::write(&fail, "").unwrap();
    // SAFETY: kill(2) on the worker.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Three failed starts in a row make a crash loop.
    wait_until("a crash loop in the status", || {
        let out = client(&args(&["--status", "--json", &ctl]));
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        (status["crash_loop"] == true).then_some(())
    });
    let crash = client(&args(&["--check", &ctl]));
    assert_eq!(crash.status.code(), Some(1));
    assert!(
        text(&crash.stderr).contains("crash loop"),
        "{}",
        text(&crash.stderr)
    );
}

#[test]
fn hostile_clients_do_not_disturb_a_reload() {
    let tmp = TempDir::new();
    let port = free_port();
    let ctl = tmp.arg("--control", "ctl");
    let server = serving(&tmp, port, &[&ctl], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    let path = tmp.path("ctl");

    // More idle connections than start_server keeps: the oldest make room for new ones.
    let crowd: Vec<UnixStream> = (0..80)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let silent = UnixStream::connect(&path).unwrap();
    let mut half = UnixStream::connect(&path).unwrap();
    half.write_all(br#"{"command":"sta"#).unwrap();
    let mut garbage = UnixStream::connect(&path).unwrap();
    garbage.write_all(b"\x00\xff{{{{]]]\n\n[1,2,3]\n").unwrap();
    // Asks and asks and never reads: its replies pile up until start_server stops reading it.
    let mut deaf = UnixStream::connect(&path).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let requests = b"{\"command\":\"status\"}\n".repeat(1000);
    let deaf_limit = wait_until("the deaf client to be blocked", || {
        let mut written = 0usize;
        loop {
            match deaf.write(&requests) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Some(written),
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert!(deaf_limit > 0);

    let reload = client(&args(&["--reload", &ctl]));
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    wait_sole_generation(&tmp.path("status"), 2);
    assert_eq!(served_by(&format!("127.0.0.1:{port}")).1, 2);
    let mut fresh = Control::connect(&path);
    assert_eq!(fresh.ask(r#"{"command":"status"}"#)["ok"], true);
    assert!(!server.log().contains("panicked"));
    drop((crowd, silent, half, garbage, deaf));
}

#[test]
fn configmap_symlink_swap_triggers_exactly_one_reload() {
    let tmp = TempDir::new();
    let volume = tmp.path("config");
    std::fs::create_dir_all(volume.join("..2026_01")).unwrap();
    std::fs::write(volume.join("..2026_01/app.conf"), "one").unwrap();
    symlink("..2026_01", volume.join("..data")).unwrap();
    symlink("..data/app.conf", volume.join("app.conf")).unwrap();
    let port = free_port();
    let ctl = tmp.arg("--control", "ctl");
    let watched = format!("--reload-on-change={}", volume.join("app.conf").display());
    let server = serving(&tmp, port, &[&ctl, &watched], &[]);
    wait_sole_generation(&tmp.path("status"), 1);

    // What the kubelet does: a new timestamped directory, a new link renamed over ..data, the
    // old directory removed.
    std::fs::create_dir(volume.join("..2026_02")).unwrap();
    std::fs::write(volume.join("..2026_02/app.conf"), "two").unwrap();
    symlink("..2026_02", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join("..2026_01")).unwrap();

    wait_sole_generation(&tmp.path("status"), 2);
    let log = server.log();
    assert_eq!(log.matches("changed: reloading").count(), 1, "{log}");
    assert!(log.contains("..data changed"), "{log}");
    let mut control = Control::connect(&tmp.path("ctl"));
    let last = control.ask(r#"{"command":"status"}"#)["status"]["last_reload"].clone();
    assert_eq!(last["trigger"], "file_change", "{last}");
    assert!(last["path"].as_str().unwrap().ends_with("..data"), "{last}");
    // Had the burst asked for a second reload, it would be generation 3: the next one asked
    // for now would be 4.
    let reply = control.ask(r#"{"command":"reload"}"#);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["generation"], 3);
    let last = control.ask(r#"{"command":"status"}"#)["status"]["last_reload"].clone();
    assert_eq!(last["trigger"], "control", "{last}");
    assert_eq!(last["result"], "up");
}

#[test]
fn control_socket_is_private_replaces_a_stale_one_and_refuses_a_link() {
    let tmp = TempDir::new();
    let path = tmp.path("ctl");
    drop(UnixListener::bind(&path).unwrap()); // a stale socket file
    let port = free_port();
    let ctl = tmp.arg("--control", "ctl");
    let mut server = serving(&tmp, port, &[&ctl], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let mut control = Control::connect(&path);
    assert_eq!(control.ask(r#"{"command":"stop"}"#)["ok"], true);
    assert!(server.wait_exit().success());
    assert!(!path.exists(), "the socket file is removed at exit");

    symlink(tmp.path("elsewhere"), &path).unwrap();
    let (status, log) = run(&args(&[
        &format!("--port=127.0.0.1:{}", free_port()),
        &ctl,
        "--",
        &tmp.http_worker().display().to_string(),
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("not a socket"), "{log}");
    assert!(!tmp.path("elsewhere").exists());
}

#[test]
fn a_burst_of_writes_to_a_watched_file_is_one_reload_logged_with_its_path() {
    let tmp = TempDir::new();
    let file = tmp.path("app.conf");
    std::fs::write(&file, "one").unwrap();
    let port = free_port();
    let watched = format!("--reload-on-change={}", file.display());
    let server = serving(&tmp, port, &[&watched], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    for text in ["two", "three", "four"] {
        std::fs::write(&file, text).unwrap();
    }
    wait_sole_generation(&tmp.path("status"), 2);
    let log = server.log();
    assert_eq!(log.matches("changed: reloading").count(), 1, "{log}");
    assert!(
        log.contains(&format!("{} changed", file.display())),
        "{log}"
    );
    // A second burst is a second reload.
    std::fs::write(&file, "five").unwrap();
    wait_sole_generation(&tmp.path("status"), 3);
    assert_eq!(server.log().matches("changed: reloading").count(), 2);
}

#[test]
fn systemd_status_summarises_the_state() {
    let tmp = TempDir::new();
    let notify = NotifySocket::at_path(&tmp.path("notify"));
    let port = free_port();
    let server = serving(
        &tmp,
        port,
        &["--workers=2"],
        &[("NOTIFY_SOCKET", notify.address.clone())],
    );
    let (_, pid1) = wait_sole_generation(&tmp.path("status"), 1);
    notify.wait_for(&[&format!(
        "STATUS=generation 1 (pid {pid1}) serving (2/2 workers up)"
    )]);
    server.signal(libc::SIGHUP);
    let (_, pid2) = wait_sole_generation(&tmp.path("status"), 2);
    let after = notify.wait_for(&[&format!(
        "STATUS=generation 2 (pid {pid2}) serving (2/2 workers up, last reload "
    )]);
    assert!(after.contains("s ago ok)"), "{after}");
}

#[test]
fn workers_changes_the_number_of_copies_without_a_reload() {
    let tmp = TempDir::new();
    let port = free_port();
    let _server = serving(&tmp, port, &[&tmp.arg("--control", "ctl")], &[]);
    wait_sole_generation(&tmp.path("status"), 1);
    let mut control = Control::connect(&tmp.path("ctl"));
    let zero = control.ask(r#"{"command":"workers","count":0}"#);
    assert_eq!(zero["ok"], false, "{zero}");
    let three = control.ask(r#"{"command":"workers","count":3}"#);
    assert_eq!(three["ok"], true, "{three}");
    let workers = wait_until("three workers up", || {
        let status = control.ask(r#"{"command":"status"}"#)["status"].clone();
        let workers = status["workers"].as_array()?.clone();
        (workers.len() == 3 && workers.iter().all(|w| w["state"] == "up")).then_some(workers)
    });
    let mut slots: Vec<(u64, u64)> = workers
        .iter()
        .map(|w| {
            (
                w["generation"].as_u64().unwrap(),
                w["slot"].as_u64().unwrap(),
            )
        })
        .collect();
    slots.sort();
    assert_eq!(slots, vec![(1, 0), (1, 1), (1, 2)]);
}

/// start_server's resident memory in kB.
fn rss_kb(pid: i32) -> u64 {
    let field = proc_status_field(pid, "VmRSS");
    field.trim_end_matches("kB").trim().parse().unwrap()
}

/// Writes `bytes` (again and again) until start_server takes no more: a `--check` round trip
/// through its loop three times in a row without room for a single byte. Returns the total.
fn write_until_held_back(stream: &mut UnixStream, bytes: &[u8], ctl: &str) -> usize {
    stream.set_nonblocking(true).unwrap();
    let (mut total, mut still) = (0, 0);
    wait_until("start_server to stop reading the flood", || {
        let before = total;
        loop {
            match stream.write(bytes) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let check = client(&args(&["--check", ctl]));
        assert!(check.status.success(), "{}", text(&check.stderr));
        still = if total == before { still + 1 } else { 0 };
        (still >= 3).then_some(total)
    })
}

#[test]
fn a_client_flooding_requests_without_reading_costs_bounded_memory() {
    let tmp = TempDir::new();
    let ctl = tmp.arg("--control", "ctl");
    let idle = tmp.script("idle.sh", "#!/bin/sh\nexec sleep 100000\n");
    let server = tmp.start_server(
        &["--interval=0", "--workers=64", &ctl],
        &[&idle.display().to_string()],
        &[],
    );
    wait_until("a healthy check", || {
        client(&args(&["--check", &ctl]))
            .status
            .success()
            .then_some(())
    });
    let before = rss_kb(server.pid());
    let mut flood = UnixStream::connect(tmp.path("ctl")).unwrap();
    let requests = b"{\"command\":\"status\"}\n".repeat(1000);
    let written = write_until_held_back(&mut flood, &requests, &ctl);
    let after = rss_kb(server.pid());
    assert!(
        after < before + 20 * 1024,
        "RSS {before} kB -> {after} kB after {written} bytes of requests"
    );
    let mut other = Control::connect(&tmp.path("ctl"));
    assert_eq!(other.ask(r#"{"command":"status"}"#)["ok"], true);
    // A second reload on one connection before the first is answered is refused.
    let mut asker = UnixStream::connect(tmp.path("ctl")).unwrap();
    asker
        .write_all(b"{\"command\":\"reload\"}\n{\"command\":\"reload\"}\n")
        .unwrap();
    asker.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut replies = BufReader::new(asker).lines();
    let first: Value = serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["ok"], false, "{first}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("not answered yet"),
        "{first}"
    );
    let second: Value = serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["ok"], true, "{second}");
    drop(flood);
}

#[test]
fn check_is_healthy_while_the_old_generation_serves_a_failing_deploy_and_strict_is_not() {
    let tmp = TempDir::new();
    let fail = tmp.path("fail");
    let port = free_port();
    let ctl = tmp.arg("--control", "ctl");
    let server = serving(
        &tmp,
        port,
        &[&ctl],
        &[("FAIL_IF_EXISTS", fail.display().to_string())],
    );
    let addr = format!("127.0.0.1:{port}");
    let (old, _) = served_by(&addr);
    wait_until("a healthy check", || {
        client(&args(&["--check", &ctl]))
            .status
            .success()
            .then_some(())
    });
    // A bad deploy: every new generation fails, again and again (a crash loop).
    std::fs::write(&fail, "").unwrap();
    server.signal(libc::SIGHUP);
    wait_until("a crash loop of the new generations", || {
        let out = client(&args(&["--status", "--json", &ctl]));
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        (status["crash_loop"] == true).then_some(())
    });
    assert_eq!(served_by(&addr).0, old, "the old generation serves on");
    let check = client(&args(&["--check", &ctl]));
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stderr).contains("ok: generation 1 is up (but"),
        "{}",
        text(&check.stderr)
    );
    let strict = client(&args(&["--check", "--strict", &ctl]));
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
    let said = text(&strict.stderr);
    assert!(
        said.contains("generation 1 serves, but") && said.contains("failed"),
        "{said}"
    );
    let status = client(&args(&["--status", &ctl]));
    let summary = text(&status.stdout);
    assert!(
        summary.contains("healthy (generation 1 is up)"),
        "{summary}"
    );
    assert!(summary.contains("DEPLOY FAILING"), "{summary}");
    assert!(summary.contains("last failure: generation"), "{summary}");
    // Fixed: the next generation comes up, and --check --strict is content again.
    std::fs::remove_file(&fail).unwrap();
    server.signal(libc::SIGHUP);
    wait_until("a strict check to pass", || {
        client(&args(&["--check", "--strict", &ctl]))
            .status
            .success()
            .then_some(())
    });
    let json: Value =
        serde_json::from_slice(&client(&args(&["--status", "--json", &ctl])).stdout).unwrap();
    assert_eq!(json["last_reload"]["result"], "up", "{json}");
}

#[test]
fn restart_gives_up_on_a_generation_that_never_exits() {
    let tmp = TempDir::new();
    let port = free_port();
    // The old worker ignores its signal (WINCH: its default is to do nothing).
    let _server = serving(
        &tmp,
        port,
        &[&tmp.arg("--status-file", "status"), "--signal-on-hup=WINCH"],
        &[],
    );
    wait_sole_generation(&tmp.path("status"), 1);
    let out = client(&args(&[
        "--restart",
        &tmp.arg("--pid-file", "pid"),
        &tmp.arg("--status-file", "status"),
        "--timeout=2",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("gave up after 2 secs (--timeout)"), "{said}");
    assert!(said.contains("--kill-old-timeout"), "{said}");
}

#[test]
fn the_short_help_is_a_screen_and_a_typo_gets_a_suggestion() {
    let help = client(&args(&["-h"]));
    assert!(help.status.success());
    let text_help = text(&help.stdout);
    assert!(text_help.lines().count() <= 30, "{text_help}");
    assert!(text_help.contains("--port="), "{text_help}");
    assert!(text_help.contains("start_server --help"), "{text_help}");
    let long = client(&args(&["--help"]));
    let long = text(&long.stdout);
    for heading in [
        "Sockets:",
        "Workers and readiness:",
        "Timing:",
        "Client commands",
    ] {
        assert!(long.contains(heading), "{heading} in {long}");
    }
    assert!(
        !long.contains("--upgrade-check <") && !long.contains("      --upgrade-check\n"),
        "internal options stay out of --help"
    );
    let typo = client(&args(&["--prot=80", "--", "/bin/true"]));
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        text(&typo.stderr).contains("Unknown option: prot (did you mean --port?)"),
        "{}",
        text(&typo.stderr)
    );
}
