//! A tiny HTTP server to run behind start_server: it answers every request with its pid and
//! generation, serving every TCP socket it inherits, and on SIGTERM finishes the request at hand
//! and exits, so that no connection is lost across a reload.
//!
//! ```sh
//! cargo build --release --bins --examples
//! ./target/release/start_server --port=8080 -- ./target/release/examples/hello_worker
//! curl http://127.0.0.1:8080/     # then: kill -HUP <start_server pid>, and curl again
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use server_starter_worker::listeners::Listeners;

fn main() {
    let mut sockets = Listeners::from_env().unwrap_or_else(|e| {
        eprintln!("hello_worker: {e}");
        std::process::exit(2);
    });
    let mut listeners: Vec<(String, TcpListener)> = Vec::new();
    for index in 0..sockets.len() {
        let name = sockets.name(index).unwrap_or_default().to_string();
        match sockets.take_tcp_listener(index) {
            Ok(Some(listener)) => listeners.push((name, listener)),
            Ok(None) => {}
            Err(e) => eprintln!("hello_worker: skipping {name}: {e}"),
        }
    }
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
    let terminate = block_and_watch_sigterm();
    let mut fds: Vec<libc::pollfd> = std::iter::once(terminate)
        .chain(listeners.iter().map(|(_, l)| l.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    for (_, listener) in &listeners {
        // Several generations share each socket: never block in accept on a connection that
        // another worker took first.
        let _ = listener.set_nonblocking(true);
    }
    let pid = std::process::id();
    let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!("hello_worker: pid {pid}, generation {generation}, serving {names:?}");
    // Ready now: start_server need not wait for --interval to retire the old generation.
    if let Err(e) =
        server_starter_worker::ready::notify(&format!("READY=1\nSTATUS=serving {names:?}"))
    {
        eprintln!("hello_worker: cannot notify readiness: {e}");
    }
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
        for (pollfd, (_, listener)) in fds[1..].iter().zip(&listeners) {
            if pollfd.revents != 0
                && let Ok((stream, _)) = listener.accept()
            {
                answer(stream, pid, &generation);
            }
        }
    }
}

fn answer(mut stream: TcpStream, pid: u32, generation: &str) {
    let _ = stream.set_nonblocking(false);
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
