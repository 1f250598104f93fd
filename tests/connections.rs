//! Connections a generation holds: start_server's `status` shows a retiring generation's
//! connections until they close. Below that, the probe itself (src/server/probe/connections) on
//! real sockets: accepted TCP (IPv4, IPv6, IPv4 on a dual-stack listener) and unix (path and
//! abstract) connections, held by this process and by worker processes (one of them forked,
//! sharing its sockets), counted the same from sock_diag and from /proc, client ends and other
//! listeners' connections left out.

mod common;

// The probe on its own, as start_server has it.
#[allow(dead_code)]
#[path = "../src/server/probe/connections/mod.rs"]
mod connections;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;
use connections::{Accepted, Listening, Source};

const SOURCES: [Source; 2] = [Source::SockDiag, Source::Proc];

/// Generation `number` of a `--status --json`.
fn generation(status: &serde_json::Value, number: u64) -> Option<serde_json::Value> {
    status["generations"]
        .as_array()?
        .iter()
        .find(|g| g["number"] == number)
        .cloned()
}

#[test]
fn a_retiring_generation_shows_its_connections_until_they_close() {
    let tmp = TempDir::new();
    let worker = tmp.script("holding_worker.py", HOLDING_WORKER);
    let (addr, port) = port_options();
    let control = tmp.path("control");
    let release = tmp.path("release");
    let server = tmp.start_server(
        &[&port[0], &tmp.arg("--control", "control")],
        &[&worker.display().to_string()],
        &[("RELEASE", release.display().to_string())],
    );
    server.wait_log("new worker is now running");
    let mut clients: Vec<BufReader<TcpStream>> = (0..5)
        .map(|_| {
            let mut client = BufReader::new(TcpStream::connect(&addr).unwrap());
            let mut hello = String::new();
            client.read_line(&mut hello).unwrap();
            assert_eq!(hello, "hello\n");
            client
        })
        .collect();
    let status = status_json(&control);
    let first = generation(&status, 1).expect("generation 1");
    assert_eq!(first["connections"], 5, "{status}");
    assert_eq!(status["workers"][0]["connections"], 5, "{status}");
    assert_eq!(first["processes"], 1, "{status}");
    assert!(first["memory_bytes"].as_u64() > Some(0), "{status}");

    server.signal(libc::SIGHUP);
    let status = wait_until("generation 2 up, generation 1 retiring", || {
        let status = status_json(&control);
        let retiring = generation(&status, 1)?["state"] == "retiring";
        (retiring && generation(&status, 2)?["state"] == "up").then_some(status)
    });
    assert_eq!(
        generation(&status, 1).unwrap()["connections"],
        5,
        "{status}"
    );
    assert_eq!(
        generation(&status, 2).unwrap()["connections"],
        0,
        "{status}"
    );
    let summary = Command::new(bin())
        .arg("--status")
        .arg(format!("--control={}", control.display()))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&summary.stdout).into_owned();
    assert!(
        summary.contains(" retiring ") && summary.contains(": 5 connections open, "),
        "{summary}"
    );

    clients.truncate(2);
    wait_until("3 of generation 1's connections closed", || {
        (generation(&status_json(&control), 1)?["connections"] == 2).then_some(())
    });
    clients.clear();
    wait_until("generation 1's connections all closed", || {
        (generation(&status_json(&control), 1)?["connections"] == 0).then_some(())
    });
    std::fs::write(&release, "").unwrap();
    wait_until("generation 1 gone once released", || {
        generation(&status_json(&control), 1)
            .is_none()
            .then_some(())
    });
}

/// How many of `listeners`' accepted connections `pids` hold, from each source (they agree).
fn held(listeners: &[Listening], pids: &[i32]) -> usize {
    let counts: Vec<usize> = SOURCES
        .iter()
        .map(|&source| {
            Accepted::read(listeners, source)
                .unwrap_or_else(|e| panic!("read the accepted sockets from {source:?}: {e}"))
                .held_by(pids)
        })
        .collect();
    assert_eq!(counts[0], counts[1], "sock_diag and /proc disagree");
    let (preferred, source) = Accepted::read_preferred(listeners).unwrap();
    assert_eq!(source, Source::SockDiag, "sock_diag works here");
    assert_eq!(preferred.held_by(pids), counts[0]);
    counts[0]
}

fn me() -> i32 {
    std::process::id() as i32
}

#[test]
fn accepted_connections_of_every_kind_held_by_this_process() {
    let tmp = TempDir::new();
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    // [::]: takes IPv6 and (dual stack, the default) IPv4 connections.
    let dual = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    let path = UnixListener::bind(tmp.path("listen.sock")).unwrap();
    let abstract_name = format!("ss-test-connections-{}", std::process::id());
    let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
    let abstract_listener = UnixListener::bind_addr(&abstract_addr).unwrap();
    // Someone else's listener: its connections are not counted.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();

    let listeners: Vec<Listening> = [
        v4.as_fd(),
        dual.as_fd(),
        path.as_fd(),
        abstract_listener.as_fd(),
    ]
    .into_iter()
    .map(|fd| Listening::of(fd).unwrap().expect("a listening socket"))
    .collect();
    assert_eq!(listeners[0], Listening::Tcp(v4.local_addr().unwrap()));
    assert_eq!(
        listeners[2],
        Listening::Unix(
            tmp.path("listen.sock")
                .into_os_string()
                .into_encoded_bytes()
        )
    );
    let mut abstract_bytes = vec![0u8];
    abstract_bytes.extend_from_slice(abstract_name.as_bytes());
    assert_eq!(listeners[3], Listening::Unix(abstract_bytes));
    assert_eq!(held(&listeners, &[me()]), 0);

    let dual_port = dual.local_addr().unwrap().port();
    let mut clients_tcp = Vec::new();
    let mut clients_unix = Vec::new();
    let mut accepted_tcp = Vec::new();
    let mut accepted_unix = Vec::new();
    for _ in 0..3 {
        clients_tcp.push(TcpStream::connect(v4.local_addr().unwrap()).unwrap());
        accepted_tcp.push(v4.accept().unwrap().0);
    }
    for target in [
        SocketAddr::from((Ipv6Addr::LOCALHOST, dual_port)),
        SocketAddr::from(([127, 0, 0, 1], dual_port)),
    ] {
        clients_tcp.push(TcpStream::connect(target).unwrap());
        accepted_tcp.push(dual.accept().unwrap().0);
    }
    for _ in 0..2 {
        clients_unix.push(UnixStream::connect(tmp.path("listen.sock")).unwrap());
        accepted_unix.push(path.accept().unwrap().0);
    }
    clients_unix.push(UnixStream::connect_addr(&abstract_addr).unwrap());
    accepted_unix.push(abstract_listener.accept().unwrap().0);
    clients_tcp.push(TcpStream::connect(other.local_addr().unwrap()).unwrap());
    let _not_ours = other.accept().unwrap().0;

    // This process holds both ends of each: only the accepted ones count.
    assert_eq!(held(&listeners, &[me()]), 5 + 3);
    // Each kind on its own.
    assert_eq!(held(&listeners[..1], &[me()]), 3);
    assert_eq!(held(&listeners[1..2], &[me()]), 2);
    assert_eq!(held(&listeners[2..3], &[me()]), 2);
    assert_eq!(held(&listeners[3..], &[me()]), 1);

    // Closed on our side: no longer held (an accepted socket closed is gone from this
    // process at once, whatever state the kernel keeps it in).
    accepted_tcp.truncate(1);
    accepted_unix.pop();
    assert_eq!(held(&listeners, &[me()]), 1 + 2);
    // Closed by the client: the accepted end leaves ESTABLISHED (CLOSE_WAIT), not counted.
    clients_tcp.remove(0);
    wait_until("the closed connection to leave ESTABLISHED", || {
        (held(&listeners, &[me()]) == 2).then_some(())
    });
    // A pid that is gone holds nothing.
    assert_eq!(held(&listeners, &[i32::MAX]), 0);
}

/// A worker process: takes the listener as fd 3, accepts connections when told how many
/// (`accept N`), forks a child sharing them (`fork`), answers `ok ...` on stdout.
const WORKER: &str = r#"
import os, socket, sys
listener = socket.socket(fileno=3)
held, children = [], []
for line in iter(sys.stdin.readline, ""):
    word = line.split()
    if word[0] == "accept":
        for _ in range(int(word[1])):
            held.append(listener.accept()[0])
        print("ok", len(held), flush=True)
    elif word[0] == "fork":
        pid = os.fork()
        if pid == 0:
            os.read(0, 1)  # until the stdin it shares with its parent closes
            os._exit(0)
        children.append(pid)
        print("ok", pid, flush=True)
    elif word[0] == "close":
        for s in held:
            s.close()
        held = []
        print("ok 0", flush=True)
"#;

struct Worker {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Worker {
    fn start(script: &std::path::Path, listener: &TcpListener) -> Worker {
        let fd = listener.as_raw_fd();
        let mut command = Command::new("python3");
        command
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: dup2 or fcntl only, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself would leave it close-on-exec.
                let placed = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if placed < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start python3");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Worker {
            child,
            input,
            output,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a command; returns the number after `ok`.
    fn ask(&mut self, command: &str) -> i32 {
        writeln!(self.input, "{command}").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.strip_prefix("ok ")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("worker answered {line:?}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn connections_held_by_workers_each_and_together() {
    let tmp = TempDir::new();
    let script = tmp.script("worker.py", WORKER);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let listeners = vec![Listening::of(listener.as_fd()).unwrap().unwrap()];
    let mut first = Worker::start(&script, &listener);
    let mut second = Worker::start(&script, &listener);
    // The clients are this process: connected before the worker accepts (the backlog holds
    // them).
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    assert_eq!(first.ask("accept 3"), 3);
    clients.extend((0..2).map(|_| TcpStream::connect(address).unwrap()));
    assert_eq!(second.ask("accept 2"), 2);

    assert_eq!(held(&listeners, &[first.pid()]), 3);
    assert_eq!(held(&listeners, &[second.pid()]), 2);
    assert_eq!(held(&listeners, &[first.pid(), second.pid(), me()]), 5);
    // A child forked after the accepts shares the sockets: each counts once.
    let forked = first.ask("fork");
    assert_eq!(held(&listeners, &[forked]), 3);
    assert_eq!(held(&listeners, &[first.pid(), forked]), 3);

    // The second worker closes its connections.
    assert_eq!(second.ask("close"), 0);
    assert_eq!(held(&listeners, &[first.pid(), forked, second.pid()]), 3);
    // The first worker is killed; its forked child (waiting for the end of the stdin they
    // share, which this test holds) still holds the three.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert_eq!(held(&listeners, &[forked]), 3);
    drop(clients);
    wait_until("the clients' closes to reach the held sockets", || {
        (held(&listeners, &[forked]) == 0).then_some(())
    });
    // Dropping `first` closes that stdin: the forked child exits.
}

#[test]
fn other_sockets_are_not_listeners() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(Listening::of(udp.as_fd()).unwrap(), None);
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(Listening::of(a.as_fd()).unwrap(), None);
    let file = std::fs::File::open("/dev/null").unwrap();
    let error = Listening::of(file.as_fd()).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENOTSOCK));
}
