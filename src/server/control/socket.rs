//! The control socket (`--control`): a unix stream socket, mode 0600, where each line is a JSON
//! request and gets one JSON line back (see `wire::control`). Everything is non-blocking
//! and runs in the event loop: the listener and each client are fds in its `ppoll`. A client
//! costs at most [`MAX_LINE`] of input and [`OUTPUT_HIGH`] of pending replies (while its replies
//! wait unread, its requests are not read either; at most [`MAX_REQUESTS_PER_WAKE`] are taken
//! per round, the rest wait in the kernel's buffer), and there are at most [`MAX_CLIENTS`] (a
//! new one replaces the oldest that waits for no reload): one that never writes or never reads
//! holds nothing up, and a pile of them does not lock out `--check`.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, recv};
use nix::sys::stat::{Mode, umask};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::{Context, Error, Result};
use crate::fs::owned::Owned;
use crate::vocab::trust;
use crate::wire::control::{Reply, Request};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 64;
/// The longest request line.
pub const MAX_LINE: usize = 64 * 1024;
/// Pending reply bytes above which a client's requests are no longer read.
pub const OUTPUT_HIGH: usize = 256 * 1024;
/// Request lines taken from one client per round of the event loop.
pub const MAX_REQUESTS_PER_WAKE: usize = 8;

pub use crate::server::event::ClientId;

/// The listening socket and its clients.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    /// The socket file, to remove only our own at exit.
    file: Owned,
    clients: Vec<Client>,
    next_id: ClientId,
}

#[derive(Debug)]
struct Client {
    id: ClientId,
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Close once the output is written.
    closing: bool,
    /// Gone: removed after this round.
    dead: bool,
    /// A reload or upgrade it asked for is not answered yet.
    awaiting: bool,
}

impl ControlSocket {
    /// Creates the socket at `path`, mode 0600. A stale socket file there (nobody listening) of
    /// root or start_server's user is replaced; anything else (a live socket, another user's
    /// file, a file, a symbolic link, a directory others can write to) is an error.
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        let shown = path.display();
        let mut file = Owned::at(path, "--control")?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(Error::runtime(format!(
                        "--control {shown}: another process (of uid {}) is listening on it: \
                         stop it, or choose another --control (or --pid-file)",
                        meta.uid()
                    )));
                }
                if !trust::trusted_uid(meta.uid()) {
                    return Err(Error::runtime(format!(
                        "--control {shown}: a socket of uid {} is there: remove it, or choose \
                         another --control (or --pid-file)",
                        meta.uid()
                    )));
                }
                warn!("removing stale control socket {shown}");
                std::fs::remove_file(path)
                    .context(|| format!("failed to remove stale control socket {shown}"))?;
            }
            Ok(_) => {
                return Err(Error::runtime(format!(
                    "--control {shown}: it exists and is not a socket: remove it or choose another \
                     --control"
                )));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::runtime(format!("failed to inspect {shown}: {e}"))),
        }
        // bind(2) never follows a link at the name (it fails with EADDRINUSE), and the umask
        // makes the file 0600 from its creation: no moment where others may connect.
        let saved = umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        umask(saved);
        let listener = bound.context(|| format!("failed to create control socket {shown}"))?;
        let meta = std::fs::symlink_metadata(path)
            .context(|| format!("failed to inspect control socket {shown}"))?;
        file.made(&meta);
        // No chmod afterwards, which would follow a link swapped in meanwhile: a file that is
        // not the private socket just made is refused.
        if !meta.file_type().is_socket() || meta.permissions().mode() & 0o777 != 0o600 {
            return Err(Error::runtime(format!(
                "--control {shown}: the socket file was replaced or has mode {:o} after its \
                 creation: put it in a directory only start_server's user can write to",
                meta.permissions().mode() & 0o7777
            )));
        }
        listener
            .set_nonblocking(true)
            .context(|| format!("failed to set up control socket {shown}"))?;
        info!("control socket at {shown}");
        Ok(ControlSocket {
            listener,
            file,
            clients: Vec::new(),
            next_id: 0,
        })
    }

    /// What to wait for: the listener, then each client (readable while its replies are
    /// read, writable while some wait).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut fds = vec![(self.listener.as_fd(), PollFlags::POLLIN)];
        for client in &self.clients {
            let mut flags = PollFlags::empty();
            if !client.closing && client.output.len() < OUTPUT_HIGH {
                flags |= PollFlags::POLLIN;
            }
            if !client.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push((client.stream.as_fd(), flags));
        }
        fds
    }

    /// Accepts, reads and writes what `revents` (in [`ControlSocket::poll_fds`]'s order) say
    /// is ready; returns the complete requests. Bad lines are answered here.
    pub fn on_ready(&mut self, revents: &[PollFlags]) -> Vec<(ClientId, Request)> {
        let mut requests = Vec::new();
        for (client, events) in self.clients.iter_mut().zip(revents.iter().skip(1)) {
            if events.is_empty() {
                continue;
            }
            // A peer that hung up fails the write and is dropped (it would be reported again
            // and again otherwise, even while its input is not read).
            if events.intersects(PollFlags::POLLOUT | PollFlags::POLLHUP | PollFlags::POLLERR) {
                client.flush();
            }
            if client.dead {
                continue;
            }
            if events.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                client.read(&mut requests);
            }
        }
        if revents.first().is_some_and(|e| !e.is_empty()) {
            self.accept();
        }
        self.clients.retain(|c| !c.dead);
        requests
    }

    /// Sends `reply` to client `id`, if it is still there.
    pub fn reply(&mut self, id: ClientId, reply: &Reply) {
        if let Some(client) = self.clients.iter_mut().find(|c| c.id == id) {
            client.awaiting = false;
            client.queue(reply);
        }
        self.clients.retain(|c| !c.dead);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        // The oldest that waits for nothing makes room (clients are in
                        // connection order).
                        match self.clients.iter().position(|c| !c.awaiting) {
                            Some(oldest) => {
                                self.clients.remove(oldest);
                            }
                            None => {
                                warn!(
                                    "control socket: {MAX_CLIENTS} clients wait for a reload, one more refused"
                                );
                                continue;
                            }
                        }
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.next_id += 1;
                    self.clients.push(Client {
                        id: self.next_id,
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        closing: false,
                        dead: false,
                        awaiting: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: the connection waits in the backlog for a later try.
                    warn!("control socket: accept failed: {e}");
                    return;
                }
            }
        }
    }
}

/// The control socket as an upgrade in place hands it to the next program image: the listener,
/// and each client with what it had not sent or read yet (one waiting for the upgrade's outcome
/// gets it from the new image).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlState {
    pub listener: RawFd,
    pub path: String,
    pub inode: u64,
    pub next_id: ClientId,
    pub clients: Vec<ClientState>,
}

/// One client of [`ControlState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientState {
    pub id: ClientId,
    pub fd: RawFd,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub closing: bool,
    pub awaiting: bool,
}

impl ControlState {
    /// The descriptors it names, kept open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener)
            .chain(self.clients.iter().map(|c| c.fd))
            .collect()
    }
}

impl ControlSocket {
    /// What the next program image needs to go on serving the socket and its clients.
    pub fn export(&self) -> ControlState {
        ControlState {
            listener: self.listener.as_raw_fd(),
            path: self.file.path().to_string_lossy().into_owned(),
            inode: self.file.current().map_or(0, |(_, inode)| inode),
            next_id: self.next_id,
            clients: self
                .clients
                .iter()
                .filter(|c| !c.dead)
                .map(|c| ClientState {
                    id: c.id,
                    fd: c.stream.as_raw_fd(),
                    input: c.input.clone(),
                    output: c.output.clone(),
                    closing: c.closing,
                    awaiting: c.awaiting,
                })
                .collect(),
        }
    }

    /// The control socket an earlier program image handed over (see
    /// [`ControlSocket::export`]).
    ///
    /// # Safety
    ///
    /// The state's fds must be the open listener and client sockets, owned by nothing else.
    pub unsafe fn adopt(state: ControlState) -> Result<ControlSocket> {
        // SAFETY: the caller promises each fd is open and ours alone.
        let listener = unsafe { UnixListener::from_raw_fd(state.listener) };
        let mut file = Owned::at(Path::new(&state.path), "--control")?;
        if file
            .current()
            .is_some_and(|(_, inode)| inode == state.inode)
        {
            file.made_current();
        }
        let clients = state
            .clients
            .into_iter()
            .map(|c| Client {
                id: c.id,
                // SAFETY: as above.
                stream: unsafe { UnixStream::from_raw_fd(c.fd) },
                input: c.input,
                output: c.output,
                closing: c.closing,
                dead: false,
                awaiting: c.awaiting,
            })
            .collect();
        Ok(ControlSocket {
            listener,
            file,
            clients,
            next_id: state.next_id,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Only our own socket: another start_server may have replaced a file it saw as stale.
        self.file.remove();
    }
}

/// How many bytes of `peeked` to read: up to and including its `lines`-th newline, or all.
fn consumed_for(peeked: &[u8], lines: usize) -> usize {
    peeked
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(lines.saturating_sub(1))
        .map_or(peeked.len(), |(at, _)| at + 1)
}

impl Client {
    /// Reads at most [`MAX_REQUESTS_PER_WAKE`] lines, answering bad ones and collecting good
    /// ones. What follows them stays in the kernel's buffer: the socket is readable again at
    /// the next wait, so a client writing without pause costs a bounded batch per round.
    fn read(&mut self, requests: &mut Vec<(ClientId, Request)>) {
        let mut buffer = [0u8; 4096];
        let mut lines = 0;
        while !self.closing && self.output.len() < OUTPUT_HIGH && lines < MAX_REQUESTS_PER_WAKE {
            let peeked = recv(
                self.stream.as_raw_fd(),
                &mut buffer,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            );
            let available = match peeked {
                Ok(0) => {
                    // The client is done writing; pending replies are still sent.
                    self.closing = true;
                    if self.output.is_empty() {
                        self.dead = true;
                    }
                    break;
                }
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            };
            let wanted = consumed_for(&buffer[..available], MAX_REQUESTS_PER_WAKE - lines);
            match self.stream.read(&mut buffer[..wanted]) {
                Ok(0) => continue,
                Ok(n) => {
                    lines += buffer[..n].iter().filter(|&&b| b == b'\n').count();
                    self.input.extend_from_slice(&buffer[..n]);
                    self.take_lines(requests);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
    }

    fn take_lines(&mut self, requests: &mut Vec<(ClientId, Request)>) {
        while let Some(end) = self.input.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = &line[..end];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(request) => {
                    self.awaiting |= matches!(request, Request::Reload | Request::Upgrade);
                    requests.push((self.id, request));
                }
                Err(e) => self.queue(&Reply::error(format!("bad request: {e}"))),
            }
        }
        if self.input.len() > MAX_LINE {
            self.input.clear();
            self.queue(&Reply::error(format!(
                "bad request: longer than {MAX_LINE} bytes"
            )));
            self.closing = true;
        }
    }

    fn queue(&mut self, reply: &Reply) {
        match serde_json::to_vec(reply) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                self.output.extend_from_slice(&bytes);
            }
            Err(e) => warn!("control socket: cannot encode a reply: {e}"),
        }
        self.flush();
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.closing {
            self.dead = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_reads_up_to_the_last_line_it_takes() {
        assert_eq!(consumed_for(b"a\nb\nc\n", 2), 4);
        assert_eq!(consumed_for(b"a\nb\nc\n", 8), 6);
        assert_eq!(consumed_for(b"a\nb\nc", 8), 5, "a partial line is read too");
        assert_eq!(consumed_for(b"abc", 1), 3);
    }
}
