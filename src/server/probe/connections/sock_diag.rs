//! Asking the kernel over `NETLINK_SOCK_DIAG`: the established TCP sockets on the listeners'
//! ports (a bytecode filter runs in the kernel), and the connected unix sockets with their names.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// TCP_ESTABLISHED, in /proc/net/tcp's `st` and sock_diag's states.
pub const TCP_ESTABLISHED: u8 = 1;

/// A `NETLINK_SOCK_DIAG` socket.
pub(super) struct Netlink {
    fd: OwnedFd,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_S_COND: u8 = 7;
const UNIX_DIAG_NAME: u16 = 0;
const UDIAG_SHOW_NAME: u32 = 1;
const NLMSG_HDRLEN: usize = 16;

impl Netlink {
    pub(super) fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd })
    }

    /// Established TCP sockets of `family` with local port `port`: `found(local, inode)`.
    pub(super) fn tcp_established(
        &self,
        family: libc::c_int,
        port: u16,
        mut found: impl FnMut(SocketAddr, u64),
    ) -> io::Result<()> {
        // struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zero sockid.
        let mut request = Vec::with_capacity(56 + 16);
        request.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        request.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
        request.extend_from_slice(&[0u8; 48]);
        // A filter run by the kernel: "source port is `port`" (S_COND with no address).
        // struct inet_diag_bc_op { code, yes, no } then struct inet_diag_hostcond
        // { family, prefix_len, port }: yes jumps to the end (accept), no past it (reject).
        let mut bytecode = vec![INET_DIAG_BC_S_COND, 12];
        bytecode.extend_from_slice(&16u16.to_ne_bytes());
        bytecode.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        bytecode.extend_from_slice(&i32::from(port).to_ne_bytes());
        request.extend_from_slice(&((4 + bytecode.len()) as u16).to_ne_bytes());
        request.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        request.extend_from_slice(&bytecode);
        self.dump(&request, |message| {
            // struct inet_diag_msg: family, state, timer, retrans, sockid (sport, dport,
            // src[16], dst[16], if, cookie[2]), expires, rqueue, wqueue, uid, inode.
            let (Some(head), Some(inode)) = (message.get(..20), message.get(68..72)) else {
                return;
            };
            let port = u16::from_be_bytes([head[4], head[5]]);
            let ip: IpAddr = if i32::from(head[0]) == libc::AF_INET {
                Ipv4Addr::new(head[8], head[9], head[10], head[11]).into()
            } else {
                let Some(bytes) = message
                    .get(8..24)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                else {
                    return;
                };
                Ipv6Addr::from(bytes).into()
            };
            let inode = u32::from_ne_bytes([inode[0], inode[1], inode[2], inode[3]]);
            found(SocketAddr::new(ip, port), u64::from(inode));
        })
    }

    /// Connected unix sockets that have a name: `found(name, inode)`.
    pub(super) fn unix_connected(&self, mut found: impl FnMut(&[u8], u64)) -> io::Result<()> {
        // struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
        let mut request = Vec::with_capacity(24);
        request.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]);
        request.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
        request.extend_from_slice(&0u32.to_ne_bytes());
        request.extend_from_slice(&UDIAG_SHOW_NAME.to_ne_bytes());
        request.extend_from_slice(&[0u8; 8]);
        self.dump(&request, |message| {
            // struct unix_diag_msg: family, type, state, pad, ino, cookie[2]; then attributes.
            let Some(ino) = message.get(4..8) else {
                return;
            };
            let inode = u64::from(u32::from_ne_bytes([ino[0], ino[1], ino[2], ino[3]]));
            for (kind, value) in attributes(message.get(16..).unwrap_or(&[])) {
                if kind == UNIX_DIAG_NAME {
                    found(value, inode);
                }
            }
        })
    }

    /// Sends one dump request and hands each answer's payload to `each`.
    pub(super) fn dump(&self, payload: &[u8], mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let mut message = Vec::with_capacity(NLMSG_HDRLEN + payload.len());
        message.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        message.extend_from_slice(&flags.to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes());
        message.extend_from_slice(&0u32.to_ne_bytes());
        message.extend_from_slice(payload);
        // SAFETY: sockaddr_nl is plain data; zeroed is the kernel as destination.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the message and address are valid for their lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let mut rest = &buffer[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        "sock_diag: a truncated answer",
                    ));
                }
                let body = &rest[NLMSG_HDRLEN..len];
                match i32::from(kind) {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let errno = body
                            .get(..4)
                            .map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    _ => each(body),
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The netlink attributes (`struct nlattr`: len, type, value) of `data`.
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        found.push((kind, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    found
}
