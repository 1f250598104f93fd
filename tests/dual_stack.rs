//! Perl servers behind start_server under socket activation (`systemd-socket-activate`, as a
//! `.socket` unit does): Starlet and Starman (through Net::Server::SS::PreFork) open every
//! inherited socket as IPv4 whatever its key, so a bare `--port=P` takes only an IPv4
//! `ListenStream=0.0.0.0:P`, and refuses the dual-stack `[::]:P` of `ListenStream=P` with the line
//! to write. `.ci/run` installs starlet, starman, libnet-server-ss-prefork-perl.

mod common;

use common::*;

/// start_server `--port=OPTION` under `systemd-socket-activate --listen=LISTEN` (which listens on
/// `port`), started by a first connection as systemd would.
fn activated(listen: &str, option: &str, port: u16, worker: &[String]) -> Server {
    let mut command = socket_activate(&[listen.to_string()], "http");
    command
        .arg(bin())
        .arg(format!("--port={option}"))
        .arg("--")
        .args(worker);
    let server = Server::spawn(command, &[]);
    wait_listening(&format!("127.0.0.1:{port}"));
    server
}

/// The PSGI app and the command lines that serve it with Starlet and with Starman.
fn perl_servers(tmp: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    let app = tmp.psgi_app();
    vec![("Starlet", starlet(&app)), ("Starman", starman(&app))]
}

#[test]
fn starlet_and_starman_serve_through_listen_stream_on_ipv4_any() {
    let tmp = TempDir::new();
    for (name, worker) in perl_servers(&tmp) {
        let port = free_port();
        let server = activated(&format!("0.0.0.0:{port}"), &port.to_string(), port, &worker);
        for _ in 0..3 {
            let body = wait_until(&format!("{name} to answer"), || {
                http_get(&format!("127.0.0.1:{port}")).ok()
            });
            assert_eq!(parse_served(&body).1, 1, "{name}: {body}");
        }
        let log = server.log();
        assert!(
            log.contains(&format!("using socket 0.0.0.0:{port} (http) from systemd")),
            "{name}: {log}"
        );
        assert!(!log.contains("Bad arg length"), "{name}: {log}");
    }
}

#[test]
fn a_bare_port_refuses_the_dual_stack_socket_and_names_the_listen_stream_line() {
    let tmp = TempDir::new();
    for (name, worker) in perl_servers(&tmp) {
        let port = free_port();
        let mut server = activated(&port.to_string(), &port.to_string(), port, &worker);
        let status = server.wait_exit();
        let log = server.log();
        assert_eq!(status.code(), Some(2), "{name}: {log}");
        assert!(
            log.contains(&format!(
                "--port={port} asks for 0.0.0.0:{port}, but systemd passed [::]:{port} (http)"
            )),
            "{name}: {log}"
        );
        assert!(
            log.contains(&format!(
                "write ListenStream=0.0.0.0:{port} in the socket unit"
            )),
            "{name}: {log}"
        );
        assert!(!log.contains("Bad arg length"), "{name}: {log}");
    }
}

#[test]
fn a_worker_that_serves_ipv6_takes_the_dual_stack_socket_for_both_families() {
    let tmp = TempDir::new();
    let port = free_port();
    let worker = [tmp.http_worker().display().to_string()];
    let server = activated(&port.to_string(), &format!("[::]:{port}"), port, &worker);
    for client in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert_eq!(served_by(&client).1, 1, "{client}: {}", server.log());
    }
    assert!(
        server
            .log()
            .contains(&format!("using socket [::]:{port} (http) from systemd"))
    );
}

#[test]
fn a_port_inside_an_inherited_socket_is_refused_instead_of_failing_to_bind() {
    let tmp = TempDir::new();
    let port = free_port();
    let worker = [tmp.http_worker().display().to_string()];
    let option = format!("127.0.0.1:{port}");
    let mut server = activated(&format!("0.0.0.0:{port}"), &option, port, &worker);
    let status = server.wait_exit();
    let log = server.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "--port={option} asks for {option}, but systemd passed 0.0.0.0:{port} (http), which \
             covers it: write ListenStream={option} in the socket unit, or --port=0.0.0.0:{port} \
             to take that socket"
        )),
        "{log}"
    );
}
