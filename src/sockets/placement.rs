//! Where each socket goes in the worker: the fd the operator asked for (`--port=...=FD`), else
//! the lowest free one from 3 up; and the sockets kept in start_server above every one of those
//! places (the *floor*), close-on-exec, so that the spawning child's `dup2`s never meet one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::sockets::Listener;

/// Where each socket goes in the worker, with the sockets parked above those places.
#[derive(Debug)]
pub struct FdLayout {
    /// `(socket in start_server, fd in the worker)`, in command-line order.
    slots: Vec<(OwnedFd, RawFd)>,
    floor: RawFd,
}

/// Where a socket is in the worker, and how it is described there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its `SERVER_STARTER_PORT` key.
    pub key: String,
    /// Its fd in the worker.
    pub fd: RawFd,
    /// Its `LISTEN_FDNAMES` name.
    pub fdname: String,
}

/// Picks each socket's fd in the worker: the one asked for with `=FD`, else the lowest free one
/// from 3 up. Two sockets asking for one fd is an error (the original silently closed one).
pub fn assign_fds(requested: &[(&str, Option<RawFd>)]) -> Result<Vec<RawFd>> {
    let mut taken: Vec<(RawFd, &str)> = Vec::new();
    for (key, fd) in requested {
        if let Some(fd) = fd {
            if let Some((_, other)) = taken.iter().find(|(t, _)| t == fd) {
                return Err(Error::usage(format!(
                    "--port {other} and --port {key} both ask for file descriptor {fd}: give \
                     each socket its own"
                )));
            }
            taken.push((*fd, key));
        }
    }
    let mut next = 3;
    let mut fds = Vec::with_capacity(requested.len());
    for (_, fd) in requested {
        fds.push(match fd {
            Some(fd) => *fd,
            None => {
                while taken.iter().any(|(t, _)| *t == next) {
                    next += 1;
                }
                next += 1;
                next - 1
            }
        });
    }
    Ok(fds)
}

impl FdLayout {
    /// Assigns every socket its fd in the worker and parks it above all of them. Returns the
    /// layout and where each socket went, in command-line order.
    pub fn new(listeners: Vec<Listener>) -> Result<(FdLayout, Vec<Placement>)> {
        let requested: Vec<(&str, Option<RawFd>)> = listeners
            .iter()
            .map(|l| (l.key.as_str(), l.requested_fd))
            .collect();
        let targets = assign_fds(&requested)?;
        let floor = targets.iter().copied().max().unwrap_or(2).max(2) + 1;
        let mut slots = Vec::with_capacity(listeners.len());
        let mut described = Vec::with_capacity(listeners.len());
        for (listener, target) in listeners.into_iter().zip(targets) {
            let parked = dup_above(&listener.fd, floor).map_err(|e| {
                Error::runtime(format!(
                    "cannot keep the socket of {} open above fd {floor}: {e}: raise the \
                     open-file limit (ulimit -n)",
                    listener.key
                ))
            })?;
            described.push(Placement {
                key: listener.key,
                fd: target,
                fdname: listener.fdname,
            });
            slots.push((parked, target));
        }
        Ok((FdLayout { slots, floor }, described))
    }
}

impl FdLayout {
    /// Each socket's fd in start_server and in the worker (what the spawning child `dup2`s).
    pub fn pairs(&self) -> Vec<(RawFd, RawFd)> {
        self.export().0
    }

    /// Each socket's inode (shared by every copy of it, in start_server and in the workers); a
    /// socket that cannot be examined is left out.
    pub fn inodes(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter_map(|(fd, _)| nix::sys::stat::fstat(fd).ok())
            .map(|stat| stat.st_ino)
            .collect()
    }

    /// The lowest fd above every place a socket takes in the worker.
    pub fn floor(&self) -> RawFd {
        self.floor
    }

    /// Each socket's fd in start_server and in the worker, and the floor: what an upgrade in
    /// place hands to the next image.
    pub fn export(&self) -> (Vec<(RawFd, RawFd)>, RawFd) {
        let slots = self
            .slots
            .iter()
            .map(|(fd, target)| (fd.as_raw_fd(), *target));
        (slots.collect(), self.floor)
    }

    /// The layout an earlier image exported (see [`FdLayout::export`]).
    ///
    /// # Safety
    ///
    /// Each first fd of `slots` must be an open socket that nothing else owns or closes.
    pub unsafe fn adopt(slots: &[(RawFd, RawFd)], floor: RawFd) -> FdLayout {
        let slots = slots
            .iter()
            // SAFETY: the caller promises each fd is open and ours alone.
            .map(|&(fd, target)| (unsafe { OwnedFd::from_raw_fd(fd) }, target))
            .collect();
        FdLayout { slots, floor }
    }
}

/// A close-on-exec copy of `fd` at `floor` or above.
pub fn dup_above(fd: &OwnedFd, floor: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd returns a new fd that we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrequested_sockets_fill_from_three_around_requested_ones() {
        let fds = assign_fds(&[("a", None), ("b", Some(4)), ("c", None), ("d", Some(0))]);
        assert_eq!(fds.unwrap(), vec![3, 4, 5, 0]);
        let fds = assign_fds(&[("a", Some(3)), ("b", None), ("c", None)]);
        assert_eq!(fds.unwrap(), vec![3, 4, 5]);
    }

    #[test]
    fn two_sockets_on_one_fd_is_an_error() {
        let err = assign_fds(&[("80", Some(5)), ("81", Some(5))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--port 80 and --port 81 both ask for file descriptor 5: give each socket its own"
        );
    }
}
