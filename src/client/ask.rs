//! One request on a running start_server's control socket, and its one-line reply: bounded in
//! time and size, and believed only from a peer that is the client's own user or root (and,
//! with `--pid-file`, the very process that file names).

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};

use crate::vocab::{Pid, Secs, trust};
use crate::wire::control::{Reply, Request};

/// The longest reply believed (a status with thousands of workers fits).
pub const MAX_REPLY: usize = 16 << 20;

/// Why a request got no answer to believe.
#[derive(Debug)]
pub enum AskError {
    /// Nothing listens there (or it cannot be reached).
    Connect {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The peer is another user's process, at a path that is not that user's alone.
    Stranger {
        path: PathBuf,
        uid: u32,
        why: String,
    },
    /// The peer is not the process the pid file names.
    NotThePidFiles {
        path: PathBuf,
        peer: Pid,
        named: Pid,
    },
    /// Sending or receiving failed.
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    /// No whole reply within the time given.
    TimedOut { path: PathBuf, limit: Duration },
    /// The reply is longer than [`MAX_REPLY`].
    TooLong { path: PathBuf },
    /// The peer closed without a reply.
    Closed { path: PathBuf },
    /// The reply is not the protocol's.
    BadReply {
        path: PathBuf,
        error: serde_json::Error,
    },
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskError::Connect { path, error } => write!(
                f,
                "cannot connect to the control socket {}: {error}: is start_server running with \
                 this --control (or --pid-file)?",
                path.display()
            ),
            AskError::Stranger { path, uid, why } => write!(
                f,
                "the control socket {} is served by a process of uid {uid}, neither root nor \
                 you, and the path is not that user's alone ({why}): not believing its answers \
                 (ask as uid {uid}, or put the socket in that user's own directory, such as the \
                 unit's RuntimeDirectory=)",
                path.display()
            ),
            AskError::NotThePidFiles { path, peer, named } => write!(
                f,
                "the control socket {} is served by pid {peer}, but the pid file names pid \
                 {named}: not believing its answers",
                path.display()
            ),
            AskError::Io { path, what, error } => {
                write!(f, "{what} the control socket {}: {error}", path.display())
            }
            AskError::TimedOut { path, limit } => write!(
                f,
                "no answer from the control socket {} within {} (--timeout)",
                path.display(),
                Secs(*limit)
            ),
            AskError::TooLong { path } => write!(
                f,
                "the reply on the control socket {} is longer than {} MiB: not a start_server",
                path.display(),
                MAX_REPLY >> 20
            ),
            AskError::Closed { path } => write!(
                f,
                "the control socket {} closed without a reply (start_server is exiting?)",
                path.display()
            ),
            AskError::BadReply { path, error } => {
                write!(
                    f,
                    "bad reply from the control socket {}: {error}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for AskError {}

/// Sends `request` to the control socket at `path` and reads the reply, within `limit`;
/// `pid`, when known (from `--pid-file`), is the process that must be answering.
pub fn ask(
    path: &Path,
    request: &Request,
    limit: Duration,
    pid: Option<Pid>,
) -> Result<Reply, AskError> {
    let deadline = Instant::now() + limit;
    let mut stream = connect(path, limit)?;
    let creds =
        socket::getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| AskError::Io {
            path: path.into(),
            what: "cannot tell who serves",
            error: e.into(),
        })?;
    let me = nix::unistd::geteuid().as_raw();
    if creds.uid() != me && creds.uid() != 0 {
        // Root asking a service that runs as its own user: believed where that user alone
        // decides what listens (the socket is theirs, in directories only they and root write).
        let theirs = if me == 0 {
            trust::not_only_theirs(path, creds.uid())
        } else {
            Some("you are not root".to_string())
        };
        if let Some(why) = theirs {
            return Err(AskError::Stranger {
                path: path.into(),
                uid: creds.uid(),
                why,
            });
        }
    }
    if let Some(named) = pid.filter(|named| *named != creds.pid()) {
        return Err(AskError::NotThePidFiles {
            path: path.into(),
            peer: creds.pid(),
            named,
        });
    }
    let mut line = serde_json::to_vec(request).map_err(|e| AskError::BadReply {
        path: path.into(),
        error: e,
    })?;
    line.push(b'\n');
    let io = |what: &'static str| {
        move |error: std::io::Error| AskError::Io {
            path: path.into(),
            what,
            error,
        }
    };
    stream
        .set_write_timeout(Some(left(deadline, path, limit)?))
        .map_err(io("cannot set up"))?;
    stream.write_all(&line).map_err(io("cannot write to"))?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 8192];
    while !reply.contains(&b'\n') {
        stream
            .set_read_timeout(Some(left(deadline, path, limit)?))
            .map_err(io("cannot set up"))?;
        match stream.read(&mut buffer) {
            Ok(0) if reply.is_empty() => return Err(AskError::Closed { path: path.into() }),
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(AskError::TimedOut {
                    path: path.into(),
                    limit,
                });
            }
            Err(e) => return Err(io("no reply from")(e)),
        }
        if reply.len() > MAX_REPLY {
            return Err(AskError::TooLong { path: path.into() });
        }
    }
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    serde_json::from_slice(&reply[..end]).map_err(|error| AskError::BadReply {
        path: path.into(),
        error,
    })
}

/// The time left before `deadline`, or the time-out.
fn left(deadline: Instant, path: &Path, limit: Duration) -> Result<Duration, AskError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AskError::TimedOut {
            path: path.into(),
            limit,
        });
    }
    Ok(left)
}

/// Connects within `limit` (a listener whose backlog is full makes connect wait: `SO_SNDTIMEO`
/// bounds that wait for unix sockets).
fn connect(path: &Path, limit: Duration) -> Result<UnixStream, AskError> {
    let failed = |error: std::io::Error| AskError::Connect {
        path: path.into(),
        error,
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| failed(e.into()))?;
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
        i64::from(limit.subsec_micros()),
    );
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout).map_err(|e| failed(e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| failed(e.into()))?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd.as_fd()), &addr)
        .map_err(|e| failed(e.into()))?;
    Ok(UnixStream::from(fd))
}
