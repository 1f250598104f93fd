//! The notification socket start_server gives its workers as `NOTIFY_SOCKET`: a datagram socket
//! in the abstract namespace (nothing to clean up, nothing for permissions to get wrong). The
//! kernel attaches each sender's credentials (`SO_PASSCRED`), so a message is attributed to the
//! process that really sent it, not to what it claims; the event loop then checks that process is
//! a worker or a descendant of one.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};

use crate::error::{Context, Result};
use crate::supervisor::Pid;

/// The socket, bound and ready.
#[derive(Debug)]
pub struct WorkerNotify {
    fd: OwnedFd,
    name: String,
}

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
        Ok(WorkerNotify { fd, name })
    }

    /// The `NOTIFY_SOCKET` value for workers (`@` marks the abstract namespace).
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    /// Every pending message with the pid of its sender; messages without credentials are
    /// dropped.
    pub fn receive(&self) -> Vec<(Pid, String)> {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let mut cmsg = nix::cmsg_space!(libc::ucred);
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
            let sender = message.cmsgs().ok().and_then(|mut cmsgs| {
                cmsgs.find_map(|c| match c {
                    ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                    _ => None,
                })
            });
            let len = message.bytes;
            if let Some(pid) = sender {
                let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
                received.push((pid, text));
            }
        }
        received
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
        let notify = WorkerNotify::bind().unwrap();
        let name = notify.env_value();
        let addr = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.send_to_addr(b"READY=1\nSTATUS=up\n", &addr).unwrap();
        let got = notify.receive();
        assert_eq!(
            got,
            vec![(
                std::process::id() as Pid,
                "READY=1\nSTATUS=up\n".to_string()
            )]
        );
        assert!(notify.receive().is_empty());
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
