//! Operator options: the shutdown delay, the worker watchdog, under real signals and workers.

mod common;

use common::*;

fn http_server(tmp: &TempDir, port: u16, extra: &[&str]) -> Server {
    let worker = tmp.http_worker();
    let mut a = vec![
        format!("--port=127.0.0.1:{port}"),
        tmp.arg("--status-file", "status"),
        "--interval=0.3".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a.push(worker.display().to_string());
    Server::start(
        &a,
        &[("SIGNAL_LOG", tmp.path("signals").display().to_string())],
    )
}

#[test]
fn shutdown_delay_serves_until_a_second_term() {
    let tmp = TempDir::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Far longer than the test's patience: only the second TERM can end it in time.
    let mut server = http_server(&tmp, port, &["--shutdown-delay=3600"]);
    let (pid, _) = served_by(&addr);
    server.signal(libc::SIGTERM);
    server.wait_log("received TERM, serving 3600 secs more before stopping the workers");
    for _ in 0..3 {
        assert_eq!(served_by(&addr).0, pid, "still served during the delay");
    }
    assert!(
        !tmp.path("signals").exists(),
        "the worker got no signal yet"
    );
    server.signal(libc::SIGTERM);
    server.wait_log("received TERM again, stopping the workers now");
    assert!(server.wait_exit().success());
    let signals = std::fs::read_to_string(tmp.path("signals")).unwrap();
    assert_eq!(signals, format!("{pid} SIGTERM\n"));
}

#[test]
fn shutdown_delay_ends_by_itself() {
    let tmp = TempDir::new();
    let port = free_port();
    let mut server = http_server(&tmp, port, &["--shutdown-delay=0.5"]);
    served_by(&format!("127.0.0.1:{port}"));
    server.signal(libc::SIGINT);
    server.wait_log("shutdown delay over");
    assert!(server.wait_exit().success());
}
