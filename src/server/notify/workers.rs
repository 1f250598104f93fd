//! The notification socket start_server gives its workers as `NOTIFY_SOCKET`: a datagram socket
//! in the abstract namespace (nothing to clean up, nothing for permissions to get wrong). The
//! kernel attaches each sender's credentials (`SO_PASSCRED`), so a message is attributed to the
//! process that really sent it, not to what it claims, and only messages from a worker or a
//! descendant of one are passed on.
//!
//! Any local user can reach an abstract socket, so a flood must cost little: a sender that is a
//! known worker is recognised at once, one already found to be a stranger is dropped at once,
//! and only an unknown sender costs a walk up /proc (once). Nothing is allocated for a dropped
//! message, and at most [`BATCH`] messages are read per call, so the event loop gets back to
//! signals and child exits between batches however many are queued.

use std::collections::HashSet;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use std::time::Instant;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::server::event::{Event, Source};
use crate::vocab::Pid;

/// The socket, bound and ready.
#[derive(Debug)]
pub struct WorkerNotify {
    fd: OwnedFd,
    name: String,
    /// The workers `strangers` was built against.
    workers: Vec<Pid>,
    /// Senders found to be neither a worker nor a worker's descendant. Emptied whenever the
    /// workers change (a new worker's helpers must not stay rejected, and pids are reused).
    strangers: HashSet<Pid>,
    /// Messages dropped since this image started (the metrics).
    rejected: u64,
}

/// The workers' notification socket as an upgrade hands it over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifySocketState {
    pub fd: RawFd,
    pub name: String,
}

/// The most messages read per [`WorkerNotify::receive`].
pub const BATCH: usize = 64;

/// The most strangers remembered; the set is emptied when full (it costs one /proc walk each
/// to learn them again), so its memory stays bounded against a sender forking new pids.
const MAX_STRANGERS: usize = 4096;

impl WorkerNotify {
    /// Binds a fresh abstract socket named after this process.
    pub fn bind() -> Result<WorkerNotify> {
        let what = || "failed to create the workers' notification socket".to_string();
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context(what)?;
        socket::setsockopt(&fd, sockopt::PassCred, &true).context(what)?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("start_server/{}/{nonce:08x}/notify", std::process::id());
        let addr = UnixAddr::new_abstract(name.as_bytes()).context(what)?;
        socket::bind(fd.as_raw_fd(), &addr).context(what)?;
        Ok(WorkerNotify {
            fd,
            name,
            workers: Vec::new(),
            strangers: HashSet::with_capacity(MAX_STRANGERS),
            rejected: 0,
        })
    }

    /// The socket's fd and name, which an upgrade in place hands to the next image.
    pub fn export(&self) -> NotifySocketState {
        NotifySocketState {
            fd: self.fd.as_raw_fd(),
            name: self.name.clone(),
        }
    }

    /// The socket an earlier image bound (see [`WorkerNotify::export`]): workers keep their
    /// `NOTIFY_SOCKET`.
    ///
    /// # Safety
    ///
    /// The state's fd must be the open, bound socket it names, owned by nothing else.
    pub unsafe fn adopt(state: NotifySocketState) -> WorkerNotify {
        WorkerNotify {
            // SAFETY: the caller promises the fd is open and ours alone.
            fd: unsafe { OwnedFd::from_raw_fd(state.fd) },
            name: state.name,
            workers: Vec::new(),
            strangers: HashSet::with_capacity(MAX_STRANGERS),
            rejected: 0,
        }
    }

    /// Messages dropped since this image started: from strangers, or without credentials.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The `NOTIFY_SOCKET` value for workers (`@` marks the abstract namespace).
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    /// The workers messages may come from now (and their descendants).
    pub fn track(&mut self, workers: &[Pid]) {
        if self.workers != workers {
            self.workers = workers.to_vec();
            self.strangers.clear();
        }
    }

    /// Up to [`BATCH`] pending messages from the tracked workers or their descendants, each with
    /// the worker it speaks for; messages from anyone else, or without credentials, are dropped.
    pub fn receive(&mut self) -> Vec<(Pid, String)> {
        self.receive_up_to(BATCH)
    }

    fn receive_up_to(&mut self, batch: usize) -> Vec<(Pid, String)> {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(libc::ucred);
        let mut read = 0;
        while read < batch {
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(message) => message,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            read += 1;
            let sender = message.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                    _ => None,
                })
            });
            let len = message.bytes;
            if let Some(worker) = sender.and_then(|pid| self.owner(pid)) {
                let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
                received.push((worker, text));
            } else {
                self.rejected += 1;
            }
        }
        received
    }

    /// The worker `pid` speaks for, cheapest checks first.
    fn owner(&mut self, pid: Pid) -> Option<Pid> {
        if self.workers.contains(&pid) {
            return Some(pid);
        }
        if self.strangers.contains(&pid) {
            return None;
        }
        let owner = owning_worker(pid, &self.workers);
        if owner.is_none() {
            if self.strangers.len() >= MAX_STRANGERS {
                self.strangers.clear();
            }
            self.strangers.insert(pid);
        }
        owner
    }
}

impl Source for WorkerNotify {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.fd.as_fd(), PollFlags::POLLIN)]
    }

    /// A bounded batch, strangers dropped cheaply: a flood of messages does not keep the loop
    /// from signals and child exits.
    fn on_ready(&mut self, ready: &[PollFlags], _: Instant, events: &mut Vec<Event>) -> Result<()> {
        if !ready.iter().all(PollFlags::is_empty) {
            events.extend(
                self.receive()
                    .into_iter()
                    .map(|(worker, text)| Event::Message { worker, text }),
            );
        }
        Ok(())
    }
}

impl AsFd for WorkerNotify {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The worker among `workers` that `pid` is, or descends from (following parent pids in
/// /proc, a few levels up): a worker's helper process may speak for it.
pub fn owning_worker(pid: Pid, workers: &[Pid]) -> Option<Pid> {
    let mut current = pid;
    for _ in 0..16 {
        if workers.contains(&current) {
            return Some(current);
        }
        let stat = std::fs::read_to_string(format!("/proc/{current}/stat")).ok()?;
        let parent: Pid = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if parent <= 1 {
            return None;
        }
        current = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    #[test]
    fn attributes_messages_to_their_real_sender() {
        let mut notify = WorkerNotify::bind().unwrap();
        let me = std::process::id() as Pid;
        let client = UnixDatagram::unbound().unwrap();
        client
            .send_to_addr(b"READY=1\nSTATUS=up\n", &addr_of(&notify))
            .unwrap();
        notify.track(&[me]);
        let got = notify.receive();
        assert_eq!(got, vec![(me, "READY=1\nSTATUS=up\n".to_string())]);
        assert!(notify.receive().is_empty());
    }

    fn addr_of(notify: &WorkerNotify) -> SocketAddr {
        SocketAddr::from_abstract_name(&notify.env_value().as_bytes()[1..]).unwrap()
    }

    #[test]
    fn strangers_are_dropped_and_remembered_until_the_workers_change() {
        let mut notify = WorkerNotify::bind().unwrap();
        let me = std::process::id() as Pid;
        let client = UnixDatagram::unbound().unwrap();
        client
            .send_to_addr(b"READY=1\n", &addr_of(&notify))
            .unwrap();
        notify.track(&[424242]);
        assert!(notify.receive().is_empty());
        assert!(notify.strangers.contains(&me));
        // A new set of workers: what was a stranger may be a worker's descendant now.
        client
            .send_to_addr(b"READY=1\n", &addr_of(&notify))
            .unwrap();
        notify.track(&[me]);
        assert_eq!(notify.receive(), vec![(me, "READY=1\n".to_string())]);
        assert!(notify.strangers.is_empty());
        assert_eq!(notify.rejected(), 1, "counted for the metrics");
    }

    #[test]
    fn one_call_reads_at_most_a_batch() {
        let mut notify = WorkerNotify::bind().unwrap();
        let me = std::process::id() as Pid;
        let client = UnixDatagram::unbound().unwrap();
        // (The kernel queues few datagrams by default, net.unix.max_dgram_qlen: hence 3.)
        for _ in 0..5 {
            client
                .send_to_addr(b"STATUS=x\n", &addr_of(&notify))
                .unwrap();
        }
        notify.track(&[me]);
        assert_eq!(notify.receive_up_to(3).len(), 3);
        assert_eq!(notify.receive().len(), 2);
    }

    #[test]
    fn descendants_speak_for_their_worker() {
        let me = std::process::id() as Pid;
        let parent = std::os::unix::process::parent_id() as Pid;
        assert_eq!(owning_worker(me, &[me]), Some(me));
        assert_eq!(owning_worker(me, &[parent]), Some(parent));
        assert_eq!(owning_worker(me, &[424242]), None);
    }
}
