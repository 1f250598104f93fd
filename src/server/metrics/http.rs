//! `GET /metrics` over HTTP/1.1, driven by the event loop: [`Exchange`] is one connection's
//! state machine (bytes in, a response out, no I/O of its own), [`Endpoint`] the event source
//! that owns the listening socket (TCP or unix) and the connections, all non-blocking.
//!
//! Bounded: a request (line and headers) is at most [`Limits::request_bytes`], at most
//! [`Limits::connections`] are open at once (beyond, the listener is not polled and the
//! kernel's backlog holds the rest), and each gets [`Limits::timeout`] from accept to close.
//! Every answer closes the connection. `/metrics` (any query string) answers the metrics,
//! other paths 404, methods other than GET 405, anything unparsable 400, too long 431.

use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::exposition::CONTENT_TYPE;

/// The bounds of an [`Endpoint`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head accepted (request line and headers).
    pub request_bytes: usize,
    /// Connections open at once.
    pub connections: usize,
    /// From accept to close.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            request_bytes: 8192,
            connections: 16,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a connection waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// More of the request.
    Read,
    /// Its response written ([`Exchange::pending`]).
    Write,
    /// The response is out and the writing side shut: read and discard until the peer closes
    /// (closing with unread bytes would reset the connection, and the peer could lose the
    /// response).
    Drain,
    /// To be closed now.
    Close,
}

/// One connection's request and response.
#[derive(Debug)]
pub struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
    sent: usize,
    limit: usize,
    state: Wants,
}

/// The routes a request can take.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Metrics,
    Error(u16, &'static str),
}

impl Exchange {
    /// A new connection, taking requests up to `limit` bytes.
    pub fn new(limit: usize) -> Exchange {
        Exchange {
            request: Vec::new(),
            response: Vec::new(),
            sent: 0,
            limit,
            state: Wants::Read,
        }
    }

    /// What it waits for.
    pub fn wants(&self) -> Wants {
        self.state
    }

    /// Bytes read from the peer (empty: the peer closed its side). `render` makes the metrics
    /// text, called only for a complete `GET /metrics`.
    pub fn received(&mut self, bytes: &[u8], render: impl FnOnce() -> String) -> Wants {
        match self.state {
            Wants::Read => {}
            Wants::Drain if bytes.is_empty() => self.state = Wants::Close,
            // Whatever comes after the request is ignored.
            _ => return self.state,
        }
        if bytes.is_empty() {
            // The peer closed before its request was complete.
            self.state = Wants::Close;
            return self.state;
        }
        self.request.extend_from_slice(bytes);
        let route = match head_end(&self.request) {
            Some(end) => route(&self.request[..end]),
            None if self.request.len() > self.limit => {
                Route::Error(431, "Request Header Fields Too Large")
            }
            None => return self.state,
        };
        self.response = match route {
            Route::Metrics => response(200, "OK", CONTENT_TYPE, render().as_bytes()),
            Route::Error(405, reason) => {
                let mut r = response(405, reason, "text/plain; charset=utf-8", b"only GET\n");
                // The Allow header, required with 405, goes before the blank line.
                let at = r.len() - b"\r\nonly GET\n".len();
                r.splice(at..at, b"Allow: GET\r\n".iter().copied());
                r
            }
            Route::Error(code, reason) => response(
                code,
                reason,
                "text/plain; charset=utf-8",
                format!("{reason}\n").as_bytes(),
            ),
        };
        self.request = Vec::new();
        self.state = Wants::Write;
        self.state
    }

    /// The bytes of the response still to write.
    pub fn pending(&self) -> &[u8] {
        &self.response[self.sent.min(self.response.len())..]
    }

    /// `n` bytes of [`Exchange::pending`] were written.
    pub fn wrote(&mut self, n: usize) -> Wants {
        self.sent += n;
        if self.state == Wants::Write && self.sent >= self.response.len() {
            self.response = Vec::new();
            self.state = Wants::Drain;
        }
        self.state
    }
}

/// Where the head (request line and headers) ends: after the blank line.
fn head_end(data: &[u8]) -> Option<usize> {
    let crlf = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::Error(400, "Bad Request");
    };
    let line = head.lines().next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Route::Error(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || target.is_empty() {
        return Route::Error(400, "Bad Request");
    }
    if method != "GET" {
        return Route::Error(405, "Method Not Allowed");
    }
    // An absolute form (`http://host/metrics`) names the path after the authority.
    let path = target
        .strip_prefix("http://")
        .map_or(target, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    match path.split(['?', '#']).next() {
        Some("/metrics") => Route::Metrics,
        _ => Route::Error(404, "Not Found"),
    }
}

fn response(code: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Which readiness a descriptor is polled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Readable (POLLIN).
    Read,
    /// Writable (POLLOUT).
    Write,
}

struct Connection {
    fd: OwnedFd,
    exchange: Exchange,
    deadline: Instant,
}

/// The metrics listener and its connections: an event source for the event loop. Poll
/// [`Endpoint::interests`], hand each ready descriptor to [`Endpoint::ready`], and call
/// [`Endpoint::expire`] at [`Endpoint::deadline`] (none while no connection is open: an idle
/// endpoint costs no wake-up).
pub struct Endpoint {
    listener: OwnedFd,
    connections: Vec<Connection>,
    limits: Limits,
}

impl Endpoint {
    /// Serves on `listener`, a listening TCP or unix stream socket (made non-blocking here).
    pub fn new(listener: OwnedFd, limits: Limits) -> io::Result<Endpoint> {
        set_nonblocking(listener.as_raw_fd())?;
        Ok(Endpoint {
            listener,
            connections: Vec::new(),
            limits,
        })
    }

    /// The descriptors to poll, and for what: the listener while there is room for a
    /// connection, each connection as its exchange wants.
    pub fn interests(&self) -> Vec<(RawFd, Interest)> {
        let mut list = Vec::with_capacity(self.connections.len() + 1);
        if self.connections.len() < self.limits.connections {
            list.push((self.listener.as_raw_fd(), Interest::Read));
        }
        for c in &self.connections {
            let interest = match c.exchange.wants() {
                Wants::Write => Interest::Write,
                _ => Interest::Read,
            };
            list.push((c.fd.as_raw_fd(), interest));
        }
        list
    }

    /// How many connections are open.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.connections.len()
    }

    /// When the oldest connection times out, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.connections.iter().map(|c| c.deadline).min()
    }

    /// `fd` is ready (readable, writable, or hung up: all handled by trying): accepts, reads or
    /// writes without blocking. `render` makes the metrics text when a request asks for it.
    pub fn ready(&mut self, fd: RawFd, render: &mut dyn FnMut() -> String) {
        if fd == self.listener.as_raw_fd() {
            self.accept();
            return;
        }
        let Some(i) = self.connections.iter().position(|c| c.fd.as_raw_fd() == fd) else {
            return;
        };
        if !self.connections[i].step(render) {
            self.connections.swap_remove(i);
        }
    }

    /// Closes the connections past their deadline.
    pub fn expire(&mut self, now: Instant) {
        self.connections.retain(|c| c.deadline > now);
    }

    fn accept(&mut self) {
        while self.connections.len() < self.limits.connections {
            // SAFETY: accept4 with no address buffer; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EAGAIN: none left; ECONNABORTED and the like: that one is gone; EMFILE:
                // the next readiness tries again. None of them concerns the others.
                return;
            }
            // SAFETY: a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            self.connections.push(Connection {
                fd,
                exchange: Exchange::new(self.limits.request_bytes),
                deadline: Instant::now() + self.limits.timeout,
            });
        }
    }
}

impl Connection {
    /// Moves the exchange on as far as the socket allows; false when it is to be closed.
    fn step(&mut self, render: &mut dyn FnMut() -> String) -> bool {
        loop {
            match self.exchange.wants() {
                Wants::Read | Wants::Drain => {
                    let mut buffer = [0u8; 4096];
                    match read(self.fd.as_raw_fd(), &mut buffer) {
                        Ok(n) => {
                            self.exchange.received(&buffer[..n], &mut *render);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
                Wants::Write => {
                    match write(self.fd.as_raw_fd(), self.exchange.pending()) {
                        Ok(n) => {
                            if self.exchange.wrote(n) == Wants::Drain {
                                // SAFETY: shutdown(2) on our own socket.
                                unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
                Wants::Close => return false,
            }
        }
    }
}

fn read(fd: RawFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // MSG_NOSIGNAL: a peer gone must not raise SIGPIPE.
    // SAFETY: the data is valid for its length.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(request: &[u8]) -> (Wants, String) {
        let mut e = Exchange::new(64);
        let wants = e.received(request, || "m 1\n".to_string());
        (wants, String::from_utf8_lossy(e.pending()).into_owned())
    }

    #[test]
    fn routes() {
        let (wants, r) = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(wants, Wants::Write);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(
            r.contains("Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n"),
            "{r}"
        );
        let (_, r) = exchange(b"GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let (_, r) = exchange(b"GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        let (_, r) = exchange(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("Allow: GET\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nonly GET\n"), "{r}");
        let (_, r) = exchange(b"GARBAGE\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        let (_, r) = exchange(&[b'x'; 65]);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }

    #[test]
    fn request_in_pieces_then_written_in_pieces_then_drained() {
        let mut e = Exchange::new(8192);
        let mut rendered = 0;
        for piece in [&b"GET /met"[..], b"rics HTTP/1.1\r\n", b"Host: a\r\n"] {
            assert_eq!(
                e.received(piece, || {
                    rendered += 1;
                    String::new()
                }),
                Wants::Read
            );
        }
        assert_eq!(
            e.received(b"\r\n", || {
                rendered += 1;
                "x 2\n".into()
            }),
            Wants::Write
        );
        assert_eq!(rendered, 1);
        let total = e.pending().len();
        assert_eq!(e.wrote(10), Wants::Write);
        assert_eq!(e.pending().len(), total - 10);
        assert_eq!(e.wrote(total - 10), Wants::Drain);
        assert_eq!(e.received(b"trailing", String::new), Wants::Drain);
        assert_eq!(e.received(b"", String::new), Wants::Close);
    }

    #[test]
    fn connections_beyond_the_bound_wait_in_the_backlog_until_one_closes() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let limits = Limits {
            connections: 2,
            ..Limits::default()
        };
        let mut endpoint = Endpoint::new(listener.into(), limits).unwrap();
        let listening = endpoint.interests()[0].0;
        assert_eq!(endpoint.deadline(), None, "idle: no wake-up");
        let mut clients: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(address).unwrap())
            .collect();
        endpoint.ready(listening, &mut String::new);
        assert_eq!(endpoint.open(), 2);
        assert!(endpoint.interests().iter().all(|(fd, _)| *fd != listening));
        assert!(endpoint.deadline().is_some());
        // Past their deadline the two are closed; the third is accepted then.
        endpoint.expire(Instant::now() + limits.timeout + Duration::from_secs(1));
        assert_eq!(endpoint.open(), 0);
        assert!(endpoint.interests().iter().any(|(fd, _)| *fd == listening));
        endpoint.ready(listening, &mut String::new);
        assert_eq!(endpoint.open(), 1);
        let mut rest = Vec::new();
        assert_eq!(clients[0].read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn peer_closing_early_closes() {
        let mut e = Exchange::new(8192);
        e.received(b"GET /metr", String::new);
        assert_eq!(e.received(b"", String::new), Wants::Close);
    }
}
