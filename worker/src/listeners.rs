//! Taking the sockets a worker inherited, as ready `std` listeners.
//!
//! ```
//! use server_starter_worker::listeners::Listeners;
//! # use std::os::fd::IntoRawFd;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // What start_server would have done: a socket at some fd, described in the environment.
//! # let fd = std::net::TcpListener::bind("127.0.0.1:0")?.into_raw_fd();
//! # // SAFETY: nothing else runs in this example's process.
//! # unsafe { std::env::set_var("SERVER_STARTER_PORT", format!("127.0.0.1:8080={fd}")) };
//! // SERVER_STARTER_PORT if set (start_server), else LISTEN_FDS (systemd, start_server too).
//! let mut sockets = Listeners::from_env()?;
//! assert_eq!(sockets.name(0), Some("127.0.0.1:8080"));
//! let listener = sockets.take_tcp_listener(0)?.expect("a TCP socket");
//! println!("serving on {}", listener.local_addr()?);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use crate::conventions::{
    ListenFdsError, PORT_ENV_VAR, PortEnvError, parse_listen_fds, parse_port_env,
};

/// Why the inherited sockets could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Neither `SERVER_STARTER_PORT` nor `LISTEN_FDS` (for this process) is set.
    MissingVariable,
    /// `SERVER_STARTER_PORT` is not `KEY=FD;...`.
    MalformedServerStarterPort(PortEnvError),
    /// The `LISTEN_*` variables are malformed.
    MalformedListenFds(ListenFdsError),
    /// The fd named by a variable is not open in this process.
    NotOpen {
        /// The descriptor.
        fd: RawFd,
    },
    /// The fd is open but is not a socket.
    NotASocket {
        /// The descriptor.
        fd: RawFd,
    },
    /// The socket is not of the kind asked for.
    WrongType {
        /// The descriptor.
        fd: RawFd,
        /// What was asked for ("a TCP listener", ...).
        expected: &'static str,
        /// What the socket is ("a UDP socket", ...).
        found: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingVariable => write!(
                f,
                "neither SERVER_STARTER_PORT nor LISTEN_FDS is set: run this program under \
                 start_server (or systemd socket activation)"
            ),
            Error::MalformedServerStarterPort(e) => e.fmt(f),
            Error::MalformedListenFds(e) => e.fmt(f),
            Error::NotOpen { fd } => write!(f, "inherited fd {fd} is not open"),
            Error::NotASocket { fd } => write!(f, "inherited fd {fd} is not a socket"),
            Error::WrongType {
                fd,
                expected,
                found,
            } => write!(f, "inherited fd {fd} is {found}, not {expected}"),
        }
    }
}

impl std::error::Error for Error {}

#[derive(Debug)]
struct Slot {
    name: String,
    fd: RawFd,
    taken: bool,
}

/// The sockets described by the environment, each taken at most once.
#[derive(Debug)]
pub struct Listeners {
    slots: Vec<Slot>,
}

impl Listeners {
    /// `SERVER_STARTER_PORT` if it is set, else `LISTEN_FDS` if it is meant for this process.
    pub fn from_env() -> Result<Listeners, Error> {
        match Self::from_server_starter() {
            Err(Error::MissingVariable) => Self::from_listen_fds(),
            other => other,
        }
    }

    /// The sockets of `SERVER_STARTER_PORT`, named by their keys (`8080`, `/run/app.sock`).
    pub fn from_server_starter() -> Result<Listeners, Error> {
        let value = std::env::var(PORT_ENV_VAR).map_err(|_| Error::MissingVariable)?;
        let entries = parse_port_env(&value).map_err(Error::MalformedServerStarterPort)?;
        Ok(Listeners {
            slots: entries
                .into_iter()
                .map(|e| Slot {
                    name: e.key,
                    fd: e.fd,
                    taken: false,
                })
                .collect(),
        })
    }

    /// The sockets of `LISTEN_FDS` (fds 3, 4, ...), named by `LISTEN_FDNAMES`; only if
    /// `LISTEN_PID` is this process.
    pub fn from_listen_fds() -> Result<Listeners, Error> {
        let var = |name| std::env::var(name).ok();
        let (fds, pid, names) = (var("LISTEN_FDS"), var("LISTEN_PID"), var("LISTEN_FDNAMES"));
        let listed = parse_listen_fds(
            fds.as_deref(),
            pid.as_deref(),
            names.as_deref(),
            std::process::id(),
        )
        .map_err(Error::MalformedListenFds)?
        .ok_or(Error::MissingVariable)?;
        Ok(Listeners {
            slots: listed
                .into_iter()
                .map(|(fd, name)| Slot {
                    name,
                    fd,
                    taken: false,
                })
                .collect(),
        })
    }

    /// How many sockets there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The key or name of socket `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.slots.get(index).map(|s| s.name.as_str())
    }

    /// The index of the socket with this key or name.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    /// Socket `index` as a TCP listener; `Ok(None)` if there is no such socket or it was taken.
    pub fn take_tcp_listener(&mut self, index: usize) -> Result<Option<TcpListener>, Error> {
        Ok(self
            .take(index, SocketKind::Tcp, "a TCP listener")?
            .map(TcpListener::from))
    }

    /// Socket `index` as a UDP socket.
    pub fn take_udp_socket(&mut self, index: usize) -> Result<Option<UdpSocket>, Error> {
        Ok(self
            .take(index, SocketKind::Udp, "a UDP socket")?
            .map(UdpSocket::from))
    }

    /// Socket `index` as a unix stream listener.
    pub fn take_unix_listener(&mut self, index: usize) -> Result<Option<UnixListener>, Error> {
        Ok(self
            .take(index, SocketKind::UnixStream, "a unix stream listener")?
            .map(UnixListener::from))
    }

    fn take(
        &mut self,
        index: usize,
        kind: SocketKind,
        expected: &'static str,
    ) -> Result<Option<OwnedFd>, Error> {
        let Some(slot) = self.slots.get_mut(index).filter(|s| !s.taken) else {
            return Ok(None);
        };
        let fd = slot.fd;
        let found = socket_kind(fd)?;
        if found != kind {
            return Err(Error::WrongType {
                fd,
                expected,
                found: found.to_string(),
            });
        }
        // SAFETY: F_SETFD on a descriptor just checked to be open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        slot.taken = true;
        // SAFETY: the environment handed this fd to the process, it is an open socket of the
        // right kind, and this `Listeners` gives it out once.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// Removes `SERVER_STARTER_PORT` and the `LISTEN_*` variables from the environment, so that the
/// program's own children do not think the sockets are theirs.
///
/// # Safety
/// Like [`std::env::remove_var`]: call it before the program starts threads.
pub unsafe fn clear_env() {
    for name in [PORT_ENV_VAR, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::env::remove_var(name) };
    }
}

/// What the kernel says a socket is (`SO_TYPE` and `SO_DOMAIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A stream socket on IPv4 or IPv6.
    Tcp,
    /// A datagram socket on IPv4 or IPv6.
    Udp,
    /// A unix stream socket.
    UnixStream,
    /// A unix datagram socket.
    UnixDatagram,
    /// Any other type or family (`SOCK_SEQPACKET`, netlink, ...).
    Other,
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketKind::Tcp => "a TCP socket",
            SocketKind::Udp => "a UDP socket",
            SocketKind::UnixStream => "a unix stream socket",
            SocketKind::UnixDatagram => "a unix datagram socket",
            SocketKind::Other => "a socket of another kind",
        })
    }
}

/// Asks the kernel what `fd` is, without taking it: a worker can look before it takes, and
/// start_server checks the sockets systemd passes with it. The error names the fd:
/// [`Error::NotOpen`] or [`Error::NotASocket`].
pub fn socket_kind(fd: RawFd) -> Result<SocketKind, Error> {
    let stream = match socket_option(fd, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => Some(true),
        Ok(libc::SOCK_DGRAM) => Some(false),
        Ok(_) => None,
        Err(libc::EBADF) => return Err(Error::NotOpen { fd }),
        Err(_) => return Err(Error::NotASocket { fd }),
    };
    let family = socket_option(fd, libc::SO_DOMAIN);
    let ip = matches!(family, Ok(libc::AF_INET) | Ok(libc::AF_INET6));
    let unix = family == Ok(libc::AF_UNIX);
    Ok(match (stream, ip, unix) {
        (Some(true), true, _) => SocketKind::Tcp,
        (Some(false), true, _) => SocketKind::Udp,
        (Some(true), _, true) => SocketKind::UnixStream,
        (Some(false), _, true) => SocketKind::UnixDatagram,
        _ => SocketKind::Other,
    })
}

fn socket_option(fd: RawFd, option: libc::c_int) -> Result<libc::c_int, libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a local int of the given size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    fn slots(fds: &[(RawFd, &str)]) -> Listeners {
        Listeners {
            slots: fds
                .iter()
                .map(|(fd, name)| Slot {
                    name: name.to_string(),
                    fd: *fd,
                    taken: false,
                })
                .collect(),
        }
    }

    #[test]
    fn takes_each_socket_once_with_the_right_type() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tcp_fd, udp_fd) = (tcp.into_raw_fd(), udp.into_raw_fd());
        let mut sockets = slots(&[(tcp_fd, "web"), (udp_fd, "dns")]);
        assert_eq!(sockets.position("dns"), Some(1));
        assert!(matches!(
            sockets.take_udp_socket(0),
            Err(Error::WrongType {
                expected: "a UDP socket",
                ..
            })
        ));
        let taken = sockets.take_tcp_listener(0).unwrap().unwrap();
        assert_eq!(taken.local_addr().unwrap(), addr);
        assert!(sockets.take_tcp_listener(0).unwrap().is_none(), "only once");
        assert!(sockets.take_tcp_listener(7).unwrap().is_none());
        let err = sockets.take_unix_listener(1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("inherited fd {udp_fd} is a UDP socket, not a unix stream listener")
        );
        assert!(sockets.take_udp_socket(1).unwrap().is_some());
    }

    #[test]
    fn tells_the_four_kinds_apart() {
        use std::os::unix::net::{UnixDatagram, UnixListener};
        let dir = std::env::temp_dir().join(format!("ssw-kind-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stream = UnixListener::bind(&dir).unwrap();
        let (datagram, _) = UnixDatagram::pair().unwrap();
        assert_eq!(socket_kind(tcp.as_raw_fd()), Ok(SocketKind::Tcp));
        assert_eq!(socket_kind(udp.as_raw_fd()), Ok(SocketKind::Udp));
        assert_eq!(socket_kind(stream.as_raw_fd()), Ok(SocketKind::UnixStream));
        assert_eq!(
            socket_kind(datagram.as_raw_fd()),
            Ok(SocketKind::UnixDatagram)
        );
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn names_fds_that_are_closed_or_not_sockets() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let mut sockets = slots(&[(file.as_raw_fd(), "file"), (100_000, "closed")]);
        assert_eq!(
            sockets.take_tcp_listener(0).unwrap_err(),
            Error::NotASocket {
                fd: file.as_raw_fd()
            }
        );
        assert_eq!(
            sockets.take_tcp_listener(1).unwrap_err(),
            Error::NotOpen { fd: 100_000 }
        );
    }
}
