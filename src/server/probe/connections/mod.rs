//! How many connections a set of processes holds that were accepted from start_server's
//! listening sockets: the established TCP connections whose local address is a listener's
//! (an accepted socket has its listener's address and port), and the connected unix stream
//! sockets that bear a listener's name (an accepted unix socket takes its listener's address;
//! the client's end has none of its own). A status request reads which sockets those are once
//! ([`Accepted::read`]), then counts, for each generation or worker, those its processes hold
//! open ([`Accepted::held_by`], from `/proc/PID/fd`: the kernel does not say which process
//! holds a socket). A socket shared by several processes after a fork counts once.
//!
//! Two ways to find the accepted sockets, same result: [`Source::SockDiag`] asks the kernel
//! over `NETLINK_SOCK_DIAG` for established TCP sockets on the listeners' ports only (a
//! bytecode filter runs in the kernel) and for connected unix sockets with their names;
//! [`Source::Proc`] reads and parses the text of `/proc/net/{tcp,tcp6,unix}`, every socket of
//! the network namespace. bench/connections.py measures both.

use std::collections::HashSet;
use std::fs;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// A listening socket, as its accepted connections show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listening {
    /// A TCP listener's local address (an unspecified address: any local address).
    Tcp(SocketAddr),
    /// A unix stream or seqpacket listener's name: a path, or `\0` then an abstract name.
    Unix(Vec<u8>),
}

impl Listening {
    /// What listening socket `fd` is. Other kinds of socket (UDP, unnamed unix sockets) have no
    /// accepted connections: `Ok(None)`.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Option<Listening>> {
        let kind = sockopt(fd, libc::SO_TYPE)?;
        if kind != libc::SOCK_STREAM && kind != libc::SOCK_SEQPACKET {
            return Ok(None);
        }
        // SAFETY: sockaddr_storage is plain data, valid when zeroed.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the buffer and its length are valid for getsockname to fill.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(match i32::from(storage.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says it is a sockaddr_in, which fits in the storage.
                let sin: libc::sockaddr_in =
                    unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(Listening::Tcp(SocketAddr::new(
                    ip.into(),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says it is a sockaddr_in6, which fits in the storage.
                let sin6: libc::sockaddr_in6 =
                    unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(Listening::Tcp(SocketAddr::new(
                    ip.into(),
                    u16::from_be(sin6.sin6_port),
                )))
            }
            libc::AF_UNIX => {
                let offset = std::mem::size_of::<libc::sa_family_t>();
                let len = (len as usize).saturating_sub(offset);
                // SAFETY: the family says it is a sockaddr_un, which fits in the storage.
                let sun: libc::sockaddr_un =
                    unsafe { *(&storage as *const libc::sockaddr_storage).cast() };
                let mut name: Vec<u8> = sun.sun_path[..len.min(sun.sun_path.len())]
                    .iter()
                    .map(|&c| c as u8)
                    .collect();
                // A path's name ends at its NUL; an abstract name is all of its bytes.
                if name.first() != Some(&0)
                    && let Some(end) = name.iter().position(|&b| b == 0)
                {
                    name.truncate(end);
                }
                (!name.is_empty()).then_some(Listening::Unix(name))
            }
            _ => None,
        })
    }

    /// Whether a TCP socket with local address `local` was accepted from this listener.
    fn accepts(&self, local: SocketAddr) -> bool {
        let Listening::Tcp(listener) = self else {
            return false;
        };
        listener.port() == local.port()
            && (listener.ip().is_unspecified() || canonical(listener.ip()) == canonical(local.ip()))
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (how a dual-stack listener's v4 connections show).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn sockopt(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized buffer and its length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Where the accepted sockets are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `NETLINK_SOCK_DIAG`, filtered by port in the kernel.
    SockDiag,
    /// `/proc/net/{tcp,tcp6,unix}`.
    Proc,
}

/// The sockets accepted from the listeners that are established now, by inode.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    inodes: HashSet<u64>,
}

impl Accepted {
    /// Reads them from `source`, in start_server's network namespace (the workers'). With
    /// [`Source::SockDiag`], a kernel without unix_diag or inet_diag (a module that could not
    /// be loaded) answers an error: read them from [`Source::Proc`] then.
    pub fn read(listeners: &[Listening], source: Source) -> io::Result<Accepted> {
        let mut inodes = HashSet::new();
        let tcp = listeners.iter().any(|l| matches!(l, Listening::Tcp(_)));
        let unix: Vec<&[u8]> = listeners
            .iter()
            .filter_map(|l| match l {
                Listening::Unix(name) => Some(name.as_slice()),
                Listening::Tcp(_) => None,
            })
            .collect();
        match source {
            Source::Proc => {
                if tcp {
                    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                        match fs::read_to_string(table) {
                            Ok(text) => inodes.extend(
                                tcp_entries(&text)
                                    .filter(|e| e.state == TCP_ESTABLISHED)
                                    .filter(|e| listeners.iter().any(|l| l.accepts(e.local)))
                                    .map(|e| e.inode),
                            ),
                            // No IPv6 in this kernel.
                            Err(e) if e.kind() == ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                if !unix.is_empty() {
                    let text = fs::read_to_string("/proc/net/unix")?;
                    inodes.extend(
                        unix_entries(&text)
                            .filter(|e| e.state == SS_CONNECTED)
                            .filter(|e| unix.iter().any(|n| proc_unix_name(n) == e.name))
                            .map(|e| e.inode),
                    );
                }
            }
            Source::SockDiag => {
                if tcp {
                    // An accepted socket has its listener's family (a dual-stack listener's
                    // IPv4 connections are IPv6 sockets): one dump per family and port.
                    let mut dumps: Vec<(libc::c_int, u16)> = listeners
                        .iter()
                        .filter_map(|l| match l {
                            Listening::Tcp(SocketAddr::V4(a)) => Some((libc::AF_INET, a.port())),
                            Listening::Tcp(SocketAddr::V6(a)) => Some((libc::AF_INET6, a.port())),
                            Listening::Unix(_) => None,
                        })
                        .collect();
                    dumps.sort_unstable();
                    dumps.dedup();
                    let diag = Netlink::open()?;
                    for (family, port) in dumps {
                        diag.tcp_established(family, port, |local, inode| {
                            if listeners.iter().any(|l| l.accepts(local)) {
                                inodes.insert(inode);
                            }
                        })?;
                    }
                }
                if !unix.is_empty() {
                    Netlink::open()?.unix_connected(|name, inode| {
                        // A path's name may come with the NUL it was bound with.
                        let name = match name.iter().position(|&b| b == 0) {
                            Some(end) if end > 0 => &name[..end],
                            _ => name,
                        };
                        if unix.contains(&name) {
                            inodes.insert(inode);
                        }
                    })?;
                }
            }
        }
        Ok(Accepted { inodes })
    }

    /// Reads them from sock_diag, else (a kernel without unix_diag or inet_diag, a seccomp
    /// filter refusing netlink) from /proc; says which. sock_diag costs about a fifth of /proc
    /// with 10,000 connections (docs/BENCHMARKS.md).
    pub fn read_preferred(listeners: &[Listening]) -> io::Result<(Accepted, Source)> {
        match Accepted::read(listeners, Source::SockDiag) {
            Ok(accepted) => Ok((accepted, Source::SockDiag)),
            Err(_) => Ok((Accepted::read(listeners, Source::Proc)?, Source::Proc)),
        }
    }

    /// How many there are.
    #[allow(dead_code)] // used where this file is included: tests/connections.rs, the bench
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// Whether there are none.
    #[allow(dead_code)] // as len
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }

    /// How many of them `pids` hold open (each socket once). A process that exits meanwhile
    /// holds none.
    #[allow(dead_code)] // as len: start_server itself counts with held_by_each
    pub fn held_by(&self, pids: &[i32]) -> usize {
        distinct(
            self.held_by_each(pids)
                .iter()
                .map(|(_, held)| held.as_slice()),
        )
    }

    /// Those each of `pids` holds open, by pid: one look at each process's descriptors, from
    /// which a status counts each worker's and (with [`distinct`]) each generation's.
    pub fn held_by_each(&self, pids: &[i32]) -> Vec<(i32, Vec<u64>)> {
        if self.inodes.is_empty() {
            return pids.iter().map(|&pid| (pid, Vec::new())).collect();
        }
        pids.iter()
            .map(|&pid| {
                let mut held = socket_inodes(pid);
                held.retain(|inode| self.inodes.contains(inode));
                (pid, held)
            })
            .collect()
    }
}

/// How many distinct sockets there are among `held` (a socket shared by processes after a
/// fork counts once).
pub fn distinct<'a>(held: impl IntoIterator<Item = &'a [u64]>) -> usize {
    let mut all = HashSet::new();
    for inodes in held {
        all.extend(inodes.iter().copied());
    }
    all.len()
}

/// The inodes of the sockets process `pid` has open (`socket:[INODE]` links in /proc/PID/fd);
/// none if it is gone or not readable. One readlinkat(2) per descriptor, relative to the open
/// directory (a path lookup from / for each would cost about twice as much).
pub fn socket_inodes(pid: i32) -> Vec<u64> {
    let mut inodes = Vec::new();
    let Ok(path) = std::ffi::CString::new(format!("/proc/{pid}/fd")) else {
        return inodes;
    };
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return inodes;
    }
    // SAFETY: fdopendir takes over the fresh descriptor (closedir closes it).
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        // SAFETY: the descriptor is still ours when fdopendir fails.
        unsafe { libc::close(fd) };
        return inodes;
    }
    let mut target = [0u8; 64];
    loop {
        // SAFETY: `dir` is an open directory stream; the entry stays valid until the next call.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated; readlinkat writes at most the buffer's length.
        let n = unsafe {
            libc::readlinkat(
                fd,
                (*entry).d_name.as_ptr(),
                target.as_mut_ptr().cast(),
                target.len(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            continue;
        };
        if let Some(inode) = target[..n]
            .strip_prefix(b"socket:[")
            .and_then(|t| t.strip_suffix(b"]"))
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse().ok())
        {
            inodes.push(inode);
        }
    }
    // SAFETY: closes the stream and its descriptor, once.
    unsafe { libc::closedir(dir) };
    inodes
}

/// SS_CONNECTED, in /proc/net/unix's `St`.
const SS_CONNECTED: u8 = 3;

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local address.
    pub local: SocketAddr,
    /// State (1: established, 10: listening).
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
}

/// The entries of /proc/net/tcp's or tcp6's text (its header and unparsable lines skipped).
pub fn tcp_entries(text: &str) -> impl Iterator<Item = TcpEntry> + '_ {
    text.lines().skip(1).filter_map(tcp_entry)
}

/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`.
fn tcp_entry(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = parse_hex_address(fields.get(1)?)?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(TcpEntry {
        local,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits then the port (IPv6): each 32-bit word of the
/// address is printed in the host's byte order.
fn parse_hex_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut words = [0u32; 4];
    let count = address.len() / 8;
    if !(count == 1 || count == 4) || address.len() % 8 != 0 {
        return None;
    }
    for (i, word) in words.iter_mut().take(count).enumerate() {
        let raw = u32::from_str_radix(address.get(i * 8..i * 8 + 8)?, 16).ok()?;
        // The kernel printed the word as a native integer: its bytes in memory are the
        // address's bytes in network order.
        *word = u32::from_be_bytes(raw.to_ne_bytes());
    }
    let ip: IpAddr = if count == 1 {
        Ipv4Addr::from(words[0]).into()
    } else {
        let mut bytes = [0u8; 16];
        for (i, word) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        Ipv6Addr::from(bytes).into()
    };
    Some(SocketAddr::new(ip, port))
}

/// One line of /proc/net/unix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixEntry {
    /// `St`: 1 unconnected (a listener among them), 3 connected.
    pub state: u8,
    /// The socket's inode.
    pub inode: u64,
    /// Its name as printed: a path, `@` then an abstract name (its NULs as `@`), or empty.
    pub name: String,
}

/// The entries of /proc/net/unix's text.
pub fn unix_entries(text: &str) -> impl Iterator<Item = UnixEntry> + '_ {
    text.lines().skip(1).filter_map(unix_entry)
}

/// `Num RefCount Protocol Flags Type St Inode Path`; the path, if any, may hold spaces.
fn unix_entry(line: &str) -> Option<UnixEntry> {
    let mut rest = line.trim_start();
    let mut fields = [""; 7];
    for field in &mut fields {
        let end = rest.find(' ').unwrap_or(rest.len());
        *field = &rest[..end];
        rest = rest[end..].strip_prefix(' ').unwrap_or(&rest[end..]);
    }
    Some(UnixEntry {
        state: u8::from_str_radix(fields[5], 16).ok()?,
        inode: fields[6].parse().ok()?,
        name: rest.to_string(),
    })
}

/// A unix socket's name as /proc/net/unix prints it.
fn proc_unix_name(name: &[u8]) -> String {
    let printed: Vec<u8> = name
        .iter()
        .map(|&b| if b == 0 { b'@' } else { b })
        .collect();
    String::from_utf8_lossy(&printed).into_owned()
}

mod sock_diag;
use sock_diag::{Netlink, TCP_ESTABLISHED};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_lines_of_both_families() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0\n   \
   1: 0100007F:1F90 0100007F:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 20 4 30 10 -1\n";
        let entries: Vec<TcpEntry> = tcp_entries(tcp).collect();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            entries,
            vec![
                TcpEntry {
                    local,
                    state: 10,
                    inode: 31337
                },
                TcpEntry {
                    local,
                    state: 1,
                    inode: 31338
                },
            ]
        );
        // ::1 port 443, and a v4-mapped ::ffff:127.0.0.1 port 80.
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
   0: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 42 1 0000000000000000 20 4 0 10 -1\n   \
   1: 0000000000000000FFFF00000100007F:0050 0000000000000000FFFF00000100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 43 1 0000000000000000 20 4 0 10 -1\n";
        let entries: Vec<TcpEntry> = tcp_entries(tcp6).collect();
        assert_eq!(entries[0].local, "[::1]:443".parse().unwrap());
        assert_eq!(entries[1].local, "[::ffff:127.0.0.1]:80".parse().unwrap());
        assert_eq!(entries[1].inode, 43);
        // A listener on [::]:80 or 0.0.0.0:80 accepts it; one on 127.0.0.2:80 does not.
        for (listener, accepts) in [
            ("[::]:80", true),
            ("0.0.0.0:80", true),
            ("127.0.0.1:80", true),
            ("127.0.0.2:80", false),
            ("127.0.0.1:81", false),
        ] {
            let listener = Listening::Tcp(listener.parse().unwrap());
            assert_eq!(listener.accepts(entries[1].local), accepts, "{listener:?}");
        }
    }

    #[test]
    fn unix_lines_with_spaces_and_abstract_names() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/app/my socket\n\
0000000000000000: 00000003 00000000 00000000 0001 03 1002 /run/app/my socket\n\
0000000000000000: 00000003 00000000 00000000 0001 03 1003\n\
0000000000000000: 00000003 00000000 00000000 0001 03 1004 @abstract@x\n";
        let entries: Vec<UnixEntry> = unix_entries(text).collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[1],
            UnixEntry {
                state: 3,
                inode: 1002,
                name: "/run/app/my socket".into()
            }
        );
        assert_eq!(entries[0].state, 1);
        assert_eq!(entries[2].name, "");
        assert_eq!(entries[3].name, proc_unix_name(b"\0abstract\0x"));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert_eq!(tcp_entries("header\nnot a line\n 0: zz:zz\n").count(), 0);
        assert_eq!(parse_hex_address("0100007F"), None);
        assert_eq!(parse_hex_address("01007F:0050"), None);
        assert_eq!(unix_entries("header\n0: 2 0 0 1 zz 5 /x\n").count(), 0);
    }
}
