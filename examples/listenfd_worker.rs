//! A worker written for systemd socket activation with the `listenfd` crate, knowing nothing of
//! start_server: it runs behind start_server unchanged (LISTEN_FDS/LISTEN_PID describe the same
//! sockets). Answers `pid=PID gen=GEN` over HTTP/1.0; exits on SIGTERM after the request at hand.

use std::io::{Read, Write};

fn main() {
    let mut fds = listenfd::ListenFd::from_env();
    let listener = match fds.take_tcp_listener(0) {
        Ok(Some(listener)) => listener,
        other => {
            eprintln!("listenfd_worker: no TCP socket at fd 3: {other:?}");
            std::process::exit(2);
        }
    };
    let generation = std::env::var("SERVER_STARTER_GENERATION").unwrap_or_default();
    let pid = std::process::id();
    // SIGTERM is read between requests, never in the middle of one.
    // SAFETY: plain signal-mask and signalfd calls on local data.
    let terminate = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    let _ = listener.set_nonblocking(true);
    let mut fds = [
        libc::pollfd {
            fd: terminate,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: a valid array of two pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[0].revents != 0 {
            return;
        }
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_nonblocking(false);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = format!("pid={pid} gen={generation}\n");
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    }
}
