//! Sockets inherited from systemd (socket activation): `LISTEN_FDS` sockets at fds 3.. with
//! `LISTEN_PID` and `LISTEN_FDNAMES`. Each is checked to be a socket and described by its address,
//! in the forms clients of `SERVER_STARTER_PORT` already parse.
//!
//! The variables are read with the worker library's own parser (`listen_fds::parse`), so
//! start_server and its workers agree on what is valid; like `sd_listen_fds()`, variables meant
//! for another process (`LISTEN_PID` is not ours) are ignored. The `listenfd` crate is not used:
//! it ignores `LISTEN_FDNAMES`, accepts a missing `LISTEN_PID` and edits the process environment.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockaddrLike, SockaddrStorage};
use server_starter_worker::listeners::{self, SocketKind};

use crate::error::{Error, Result};

/// Where an inherited socket listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP or UDP on an IP address.
    Ip(SocketAddr),
    /// A unix socket with a path.
    Path(PathBuf),
    /// A unix socket in the abstract namespace (`@name`), or unnamed.
    OtherUnix(String),
}

/// A socket systemd handed over.
#[derive(Debug)]
pub struct Inherited {
    /// The socket (close-on-exec).
    pub fd: OwnedFd,
    /// Its name in `LISTEN_FDNAMES` (the socket unit's name or its `FileDescriptorName=`).
    pub name: String,
    /// What it is bound to.
    pub address: Address,
    /// A datagram socket (UDP, or a unix datagram socket).
    pub datagram: bool,
}

impl Inherited {
    /// The `SERVER_STARTER_PORT` key: `0.0.0.0:80`, `[::]:443`, `/run/app.sock`.
    pub fn key(&self) -> String {
        match &self.address {
            Address::Ip(addr) => addr.to_string(),
            Address::Path(path) => path.display().to_string(),
            Address::OtherUnix(name) => name.clone(),
        }
    }
}

/// Takes the sockets systemd passed to this process, if any. The variables themselves are left
/// for `config` to remove from what workers get.
pub fn take_from_env() -> Result<Vec<Inherited>> {
    let var = |name: &str| std::env::var(name).ok();
    let (fds, pid, names) = (var("LISTEN_FDS"), var("LISTEN_PID"), var("LISTEN_FDNAMES"));
    let listed = server_starter_worker::conventions::parse_listen_fds(
        fds.as_deref(),
        pid.as_deref(),
        names.as_deref(),
        std::process::id(),
    )
    .map_err(|e| {
        let show = |value: &Option<String>| {
            value
                .as_ref()
                .map_or_else(|| "(unset)".to_string(), |v| format!("{v:?}"))
        };
        Error::usage(format!(
            "bad socket activation variables LISTEN_FDS={}, LISTEN_PID={}, LISTEN_FDNAMES={}: \
             {e}; they must come from systemd (or systemd-socket-activate)",
            show(&fds),
            show(&pid),
            show(&names),
        ))
    })?;
    listed
        .unwrap_or_default()
        .into_iter()
        .map(|(fd, name)| describe(fd, name, fds.as_deref().unwrap_or_default()))
        .collect()
}

/// Checks and describes fd `fd` (its kind as the worker library sees it, its address from
/// `getsockname`), one of the `LISTEN_FDS={count}` sockets.
fn describe(fd: RawFd, name: String, count: &str) -> Result<Inherited> {
    let bad = |what: String| {
        Error::usage(format!(
            "LISTEN_FDS={count:?}: fd {fd} ({name:?}) {what}: LISTEN_FDS must come from systemd (or systemd-socket-activate), which passes sockets only"
        ))
    };
    // Workers get the sockets through the fd layout, never by inheriting start_server's fds.
    // SAFETY: F_SETFD takes no pointer; on a number that is not an open fd it fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(match Errno::last() {
            Errno::EBADF => bad("is not open".into()),
            e => bad(format!("cannot be inspected ({})", e.desc())),
        });
    }
    // SAFETY: LISTEN_FDS handed this open fd to this process, and it is taken only once (the
    // parser lists each fd once); from here on we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let kind = match listeners::socket_kind(fd.as_raw_fd()) {
        Ok(kind) => kind,
        Err(listeners::Error::NotOpen { .. }) => return Err(bad("is not open".into())),
        Err(_) => return Err(bad("is not a socket".into())),
    };
    let local: SockaddrStorage = socket::getsockname(fd.as_raw_fd())
        .map_err(|e| bad(format!("has no address ({})", e.desc())))?;
    let address = match local.family() {
        Some(AddressFamily::Inet) => {
            let v4 = local.as_sockaddr_in().map(|a| SocketAddrV4::from(*a));
            Address::Ip(
                v4.ok_or_else(|| bad("has an unreadable address".into()))?
                    .into(),
            )
        }
        Some(AddressFamily::Inet6) => {
            let v6 = local.as_sockaddr_in6().map(|a| SocketAddrV6::from(*a));
            Address::Ip(
                v6.ok_or_else(|| bad("has an unreadable address".into()))?
                    .into(),
            )
        }
        Some(AddressFamily::Unix) => {
            let unix = local
                .as_unix_addr()
                .ok_or_else(|| bad("has an unreadable address".into()))?;
            match (unix.path(), unix.as_abstract()) {
                (Some(path), _) => Address::Path(path.to_path_buf()),
                (None, Some(name)) => {
                    Address::OtherUnix(format!("@{}", String::from_utf8_lossy(name)))
                }
                (None, None) => Address::OtherUnix(name.clone()),
            }
        }
        other => return Err(bad(format!("is of an unsupported family ({other:?})"))),
    };
    Ok(Inherited {
        fd,
        name,
        address,
        datagram: matches!(kind, SocketKind::Udp | SocketKind::UnixDatagram),
    })
}
