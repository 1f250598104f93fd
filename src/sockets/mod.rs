//! Binding the listening sockets of `--port` and `--path`, the way the original does
//! (`SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6, unix sockets made with umask 0), with errors that
//! name the address and what to do.

pub mod activation;
pub mod conventions;
pub mod for_workers;
pub mod placement;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, sockopt,
};
use nix::sys::stat::{Mode, umask};
use tracing::{info, warn};

use crate::config::port_spec::{Host, PortSpec};
use crate::error::{Context, Error, Result};
use crate::fs::owned::Owned;
use crate::sockets::activation::{Address, Inherited};
use crate::sockets::conventions::{STORE_PREFIX, fdname_for, store_name};
use crate::vocab::trust;

/// A socket start_server holds for its workers.
#[derive(Debug)]
pub struct Listener {
    /// The worker's `SERVER_STARTER_PORT` key for it.
    pub key: String,
    /// The socket (close-on-exec in start_server itself).
    pub fd: OwnedFd,
    /// The fd the operator asked for in the worker (`--port=...=FD`).
    pub requested_fd: Option<RawFd>,
    /// Its name in the worker's `LISTEN_FDNAMES`: systemd's name for an inherited socket, the
    /// key (made fit for that list) for one bound here.
    pub fdname: String,
    /// Where it came from, which decides what systemd's file descriptor store needs.
    pub origin: Origin,
}

/// Where a listening socket came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A socket unit passed it: systemd holds it anyway.
    Unit,
    /// Bound here (or taken from the store under an old name); to be kept in the file
    /// descriptor store under this name, replacing any older copy, when there is one.
    Bound(String),
    /// Taken back from the file descriptor store, where it stays under this name.
    Stored(String),
}

/// Everything bound at start-up. Dropping it removes the unix socket files it created, so an
/// error half-way leaves nothing behind; a daemonizing parent leaves with `_exit` and so keeps
/// them for its child, and sockets kept in systemd's file descriptor store keep them for the
/// next start (`keep_socket_files`).
#[derive(Debug, Default)]
pub struct Bound {
    /// Ports first, then paths, in command-line order.
    pub listeners: Vec<Listener>,
    /// Old names of stored sockets taken under a new one (the option is written differently),
    /// to be removed from the store, with the socket's key.
    pub renamed: Vec<(String, String)>,
    /// The socket files created here, removed at exit if still the ones made.
    unix_paths: Vec<Owned>,
}

impl Bound {
    /// The socket files this process created (removed at exit), which an upgrade in place hands
    /// to the next image.
    pub fn unix_paths(&self) -> impl Iterator<Item = &Path> {
        self.unix_paths.iter().map(Owned::path)
    }

    /// The socket files an earlier image created, to be removed at exit (the sockets themselves
    /// are adopted by [`placement::FdLayout`]).
    pub fn adopt(unix_paths: Vec<PathBuf>) -> Result<Bound> {
        let unix_paths = unix_paths
            .iter()
            .map(|path| {
                let mut owned = Owned::at(path, "--path")?;
                owned.made_current();
                Ok(owned)
            })
            .collect::<Result<_>>()?;
        Ok(Bound {
            listeners: Vec::new(),
            renamed: Vec::new(),
            unix_paths,
        })
    }

    /// Leaves the socket files in place at exit: the sockets are in systemd's file descriptor
    /// store, which hands them to the next start, and clients find them by their files.
    pub fn keep_socket_files(&mut self) {
        self.unix_paths.clear();
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        for owned in &mut self.unix_paths {
            owned.remove();
        }
    }
}

/// Binds every `--port` then every `--path`, except those systemd already handed over
/// (`inherited`: a socket unit's, used as they are, or the file descriptor store's, recognised
/// by address and named after their option); a socket unit's sockets no option names come last.
/// Stored sockets no option wants are closed first and handed to `retire` (key and store name)
/// before anything is bound, so that the store lets go of them too and they never stand in a
/// bind's way (`--port=127.0.0.1:80` stored, `--port=0.0.0.0:80` asked).
pub fn bind_all(
    ports: &[PortSpec],
    paths: &[PathBuf],
    backlog: Backlog,
    inherited: Vec<Inherited>,
    retire: impl FnOnce(&[(String, String)]),
) -> Result<Bound> {
    let (stored, mut inherited): (Vec<_>, Vec<_>) = inherited
        .into_iter()
        .partition(|s| s.name.starts_with(STORE_PREFIX));
    let addrs = ports.iter().map(resolve).collect::<Result<Vec<_>>>()?;
    let wanted = |s: &Inherited| match &s.address {
        Address::Ip(addr) => ports
            .iter()
            .zip(&addrs)
            .any(|(spec, a)| a == addr && spec.udp == s.datagram),
        Address::Path(path) => !s.datagram && paths.contains(path),
        Address::OtherUnix(_) => false,
    };
    let (mut stored, stale): (Vec<_>, Vec<_>) = stored.into_iter().partition(wanted);
    retire(
        &stale
            .into_iter()
            .map(|s| (s.key(), s.name))
            .collect::<Vec<_>>(),
    );
    let mut bound = Bound::default();
    for (spec, &addr) in ports.iter().zip(&addrs) {
        let same = |s: &Inherited| s.datagram == spec.udp && s.address == Address::Ip(addr);
        let name = store_name(if spec.udp { "udp" } else { "tcp" }, &spec.key);
        let taken = take_inherited(&mut inherited, same);
        if taken.is_none() {
            refuse_overlap(spec, addr, &inherited)?;
        }
        let (fd, fdname, origin) = match taken {
            Some(socket) => (socket.fd, socket.name, Origin::Unit),
            None => match take_stored(&mut stored, &name, same, &mut bound.renamed) {
                Some((fd, origin)) => (fd, fdname_for(&spec.key), origin),
                None => (
                    bind_port(spec, addr, backlog)?,
                    fdname_for(&spec.key),
                    Origin::Bound(name),
                ),
            },
        };
        bound.listeners.push(Listener {
            key: spec.key.clone(),
            fd,
            requested_fd: spec.fd,
            fdname,
            origin,
        });
    }
    for path in paths {
        let key = unix_key(path)?;
        let same = |s: &Inherited| !s.datagram && s.address == Address::Path(path.clone());
        let name = store_name("unix", &key);
        let (fd, fdname, origin) = match take_inherited(&mut inherited, same) {
            Some(socket) => (socket.fd, socket.name, Origin::Unit),
            None => match take_stored(&mut stored, &name, same, &mut bound.renamed) {
                Some((fd, origin)) if is_socket(path) => (fd, fdname_for(&key), origin),
                gone => {
                    if gone.is_some() {
                        warn!("the file of stored socket {key} is gone: binding it anew");
                    }
                    let fd = bind_unix(path, backlog, &mut bound.unix_paths)?;
                    (fd, fdname_for(&key), Origin::Bound(name))
                }
            },
        };
        bound.listeners.push(Listener {
            key,
            fd,
            requested_fd: None,
            fdname,
            origin,
        });
    }
    for socket in inherited {
        bound.listeners.push(Listener {
            key: socket.key(),
            fd: socket.fd,
            requested_fd: None,
            fdname: socket.name,
            origin: Origin::Unit,
        });
    }
    Ok(bound)
}

/// The stored socket at an option's address: under the option's `name` it stays stored; under
/// another (the option was written differently, `--port=8080` then `--port=0.0.0.0:8080`) it is
/// stored again under `name` and the old name goes to `renamed`.
fn take_stored(
    stored: &mut Vec<Inherited>,
    name: &str,
    same: impl Fn(&Inherited) -> bool,
    renamed: &mut Vec<(String, String)>,
) -> Option<(OwnedFd, Origin)> {
    if let Some(socket) = take_inherited(stored, |s| s.name == name && same(s)) {
        return Some((socket.fd, Origin::Stored(name.to_string())));
    }
    let socket = take_inherited(stored, same)?;
    info!(
        "using socket {} from systemd's file descriptor store ({}), to be stored as {name}",
        socket.key(),
        socket.name
    );
    renamed.push((socket.key(), socket.name));
    Some((socket.fd, Origin::Bound(name.to_string())))
}

fn take_inherited(
    pool: &mut Vec<Inherited>,
    wanted: impl Fn(&Inherited) -> bool,
) -> Option<Inherited> {
    let index = pool.iter().position(wanted)?;
    Some(pool.remove(index))
}

/// An inherited socket matches a `--port` only at exactly its address. One that covers that
/// address without being it (systemd's dual-stack `[::]:P` of `ListenStream=P` against a bare
/// `--port=P`, or `0.0.0.0:P` against `127.0.0.1:P`) would make the bind fail on a port the
/// operator sees as free, so it is refused here with the unit line to write instead. The
/// dual-stack case is not matched on purpose: Perl servers (Starlet, Starman) open every
/// inherited socket as IPv4 and die on each connection to an IPv6 one, whatever its key says.
fn refuse_overlap(spec: &PortSpec, wanted: SocketAddr, pool: &[Inherited]) -> Result<()> {
    let Some((socket, held)) = pool.iter().find_map(|s| match s.address {
        Address::Ip(held) if s.datagram == spec.udp && overlaps(held, &s.fd, wanted) => {
            Some((s, held))
        }
        _ => None,
    }) else {
        return Ok(());
    };
    let line = if spec.udp {
        "ListenDatagram"
    } else {
        "ListenStream"
    };
    let (key, name) = (&spec.key, &socket.name);
    let (why, other) = if held.is_ipv6() && wanted.is_ipv4() {
        (
            format!(
                " (IPv6 dual-stack, what {line}={} makes); Perl servers (Starlet, Starman) fail \
                 on every connection to an IPv6 socket",
                held.port()
            ),
            "if the worker serves IPv6",
        )
    } else {
        (String::new(), "to take that socket")
    };
    Err(Error::usage(format!(
        "--port={key} asks for {wanted}, but systemd passed {held} ({name}), which covers it\
         {why}: write {line}={wanted} in the socket unit, or --port={held} {other}"
    )))
}

/// Whether binding `wanted` would collide with `held` (same port, and one address contains the
/// other).
fn overlaps(held: SocketAddr, fd: &OwnedFd, wanted: SocketAddr) -> bool {
    if held.port() != wanted.port() || held == wanted {
        return false;
    }
    match (held, wanted) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            held.ip().is_unspecified() || wanted.ip().is_unspecified()
        }
        (SocketAddr::V6(v6), SocketAddr::V4(_)) => {
            v6.ip().is_unspecified() && !socket::getsockopt(fd, sockopt::Ipv6V6Only).unwrap_or(true)
        }
        // start_server binds IPv6 addresses IPv6-only: they never collide with IPv4 ones.
        (SocketAddr::V4(_), SocketAddr::V6(_)) => false,
    }
}

fn resolve(spec: &PortSpec) -> Result<SocketAddr> {
    let ip: IpAddr = match &spec.host {
        Host::AnyV4 => Ipv4Addr::UNSPECIFIED.into(),
        Host::V6(addr) => (*addr).into(),
        Host::Named(name) => {
            let addrs: Vec<SocketAddr> = (name.as_str(), spec.port)
                .to_socket_addrs()
                .map_err(|e| {
                    // A static binary in an empty container root has neither file.
                    Error::runtime(format!(
                        "failed to resolve host {name:?} of --port={}: {e}: host names need \
                         /etc/hosts or a DNS server in /etc/resolv.conf; or write an IP address",
                        spec.key
                    ))
                })?
                .collect();
            // The original resolves with gethostbyname: IPv4 first.
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .map(|a| a.ip())
                .ok_or_else(|| Error::runtime(format!("host {name:?} has no address")))?
        }
    };
    Ok(SocketAddr::new(ip, spec.port))
}

fn bind_port(spec: &PortSpec, addr: SocketAddr, backlog: Backlog) -> Result<OwnedFd> {
    let (family, kind) = (
        if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        },
        if spec.udp {
            SockType::Datagram
        } else {
            SockType::Stream
        },
    );
    let what = || format!("failed to bind to {}", spec.key);
    let fd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None).context(what)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).context(what)?;
    let result = match addr {
        SocketAddr::V4(v4) => {
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))
        }
        SocketAddr::V6(v6) => {
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true).context(what)?;
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(v6))
        }
    };
    result.map_err(|errno| {
        let hint = match errno {
            nix::errno::Errno::EADDRINUSE => {
                ": another process listens there: stop it or choose another port"
            }
            nix::errno::Errno::EACCES => {
                ": ports below 1024 need root or CAP_NET_BIND_SERVICE (or use socket activation)"
            }
            nix::errno::Errno::EADDRNOTAVAIL => {
                ": no interface has that address: use one of this host's addresses"
            }
            _ => "",
        };
        Error::runtime(format!("{}: {}{hint}", what(), errno.desc()))
    })?;
    if !spec.udp {
        socket::listen(&fd, backlog).context(|| format!("listen(2) failed for {}", spec.key))?;
    }
    Ok(fd)
}

/// The key of a unix socket is its path; clients split entries on `;` and `=`, so neither may
/// appear in it.
fn unix_key(path: &Path) -> Result<String> {
    let key = path
        .to_str()
        .ok_or_else(|| Error::usage(format!("--path {path:?} is not valid UTF-8")))?;
    if key.is_empty() || key.contains([';', '=']) {
        return Err(Error::usage(format!(
            "--path {key:?} cannot be described in SERVER_STARTER_PORT: it must be non-empty \
             and contain neither ';' nor '='"
        )));
    }
    Ok(key.to_string())
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn bind_unix(path: &Path, backlog: Backlog, created: &mut Vec<Owned>) -> Result<OwnedFd> {
    let shown = path.display();
    let mut owned = Owned::at(path, "--path")?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::runtime(format!(
                    "failed to listen to file {shown}: another process is listening on it; \
                     stop it or choose another --path"
                )));
            }
            Err(_) if !trust::trusted_uid(meta.uid()) => {
                return Err(Error::runtime(format!(
                    "failed to listen to file {shown}: a stale socket of uid {} is there: \
                     remove it or choose another --path",
                    meta.uid()
                )));
            }
            Err(_) => {
                warn!("removing existing socket file:{shown}");
                std::fs::remove_file(path)
                    .context(|| format!("failed to remove existing socket file:{shown}"))?;
            }
        },
        Ok(_) => {
            return Err(Error::runtime(format!(
                "failed to listen to file {shown}: it exists and is not a socket: remove it or \
                 choose another --path"
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(Error::runtime(format!("failed to inspect {shown}: {e}"))),
    }
    let what = || format!("failed to listen to file {shown}");
    let addr = UnixAddr::new(path).context(what)?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(what)?;
    // The original creates the socket with umask 0, so that any user can connect.
    let saved = umask(Mode::empty());
    let result = socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    umask(saved);
    result.context(what)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        owned.made(&meta);
    }
    created.push(owned);
    socket::listen(&fd, backlog).context(what)?;
    Ok(fd)
}
