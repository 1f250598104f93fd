//! A tiny HTTP server to run behind start_server: it answers every request with its pid and
//! generation, serving every TCP socket it inherits, and on SIGTERM finishes the request at hand
//! and exits, so that no connection is lost across a reload.
//!
//! ```sh
//! cargo build --release --examples
//! ./target/release/start_server --port=8080 -- ./target/release/examples/hello_worker
//! curl http://127.0.0.1:8080/     # then: kill -HUP <start_server pid>, and curl again
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use server_starter::port_env;

fn main() {
    let value = std::env::var(port_env::VAR).unwrap_or_else(|_| {
        eprintln!(
            "hello_worker: {} is not set; run me under start_server",
            port_env::VAR
        );
        std::process::exit(2);
    });
    let entries = port_env::parse(&value).unwrap_or_else(|e| {
        eprintln!("hello_worker: {e}");
        std::process::exit(2);
    });
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
    // SAFETY: start_server hands these fds to us and nothing else in this process uses them.
    let listeners: Vec<TcpListener> = entries
        .iter()
        .filter(|e| !e.key.starts_with('/'))
        .map(|e| unsafe { TcpListener::from_raw_fd(e.fd) })
        .collect();
    let terminate = block_and_watch_sigterm();
    let mut fds: Vec<libc::pollfd> = std::iter::once(terminate)
        .chain(listeners.iter().map(|l| l.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let pid = std::process::id();
    eprintln!("hello_worker: pid {pid}, generation {generation}, serving {value}");
    loop {
        // SAFETY: a valid array of pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            eprintln!("hello_worker: pid {pid} got SIGTERM, exiting");
            return;
        }
        for (pollfd, listener) in fds[1..].iter().zip(&listeners) {
            if pollfd.revents != 0
                && let Ok((stream, _)) = listener.accept()
            {
                answer(stream, pid, &generation);
            }
        }
    }
}

fn answer(mut stream: TcpStream, pid: u32, generation: &str) {
    let mut request = [0u8; 4096];
    let _ = stream.read(&mut request);
    let body = format!("Hello from pid {pid}, generation {generation}\n");
    let _ = write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// SIGTERM becomes readable on an fd instead of killing us mid-request.
fn block_and_watch_sigterm() -> i32 {
    // SAFETY: plain signal-mask and signalfd calls on local data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    }
}
