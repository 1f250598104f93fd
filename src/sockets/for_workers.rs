//! The sockets as every worker gets them: placed at their fds ([`FdLayout`]), described in
//! `SERVER_STARTER_PORT` and, when they sit at 3, 4, ... in order, in `LISTEN_FDS` and
//! `LISTEN_FDNAMES`; and what `status` says of each.

use std::os::fd::{AsRawFd, RawFd};

use tracing::info;

use crate::error::Result;
use crate::sockets::placement::{FdLayout, Placement};
use crate::sockets::{Listener, Origin, conventions};
use crate::wire::control::SocketInfo;

/// The sockets as workers get them.
#[derive(Debug)]
pub struct ForWorkers {
    /// The sockets and where they go.
    pub layout: FdLayout,
    /// `SERVER_STARTER_PORT` (empty when there are no sockets).
    pub port_env: String,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES` (plus `LISTEN_PID`, set in the child), when they apply.
    pub listen_env: Option<(String, String)>,
}

/// Places every socket for the workers and describes it; `listen_fds`: describe them with
/// `LISTEN_*` too (unless `--no-listen-fds`). Returns with them what `status` says of them.
pub fn describe(
    listeners: Vec<Listener>,
    listen_fds: bool,
) -> Result<(ForWorkers, Vec<SocketInfo>)> {
    let explicit: Vec<_> = listeners.iter().filter_map(|l| l.requested_fd).collect();
    let origins = socket_origins(&listeners);
    let (layout, described) = FdLayout::new(listeners)?;
    let info = described
        .iter()
        .zip(origins)
        .map(|(placed, (address, origin))| SocketInfo {
            key: placed.key.clone(),
            address,
            fd: placed.fd,
            origin: origin.to_string(),
        })
        .collect();
    for fd in explicit {
        info!("socket is duplicated to file descriptor {fd}");
    }
    let listen_env = if listen_fds {
        listen_fds_env(&described)
    } else {
        None
    };
    // Set even when empty, as the original does: its client library dies when it is missing,
    // and a value from start_server's own environment must not describe sockets we do not pass.
    let port_env = conventions::port_env_value(described.iter().map(|p| (p.key.as_str(), p.fd)));
    Ok((
        ForWorkers {
            layout,
            port_env,
            listen_env,
        },
        info,
    ))
}

/// Each socket's actual address, and where it came from: `bound` here, `inherited` from a
/// socket unit, or `stored` (taken back from systemd's file descriptor store).
fn socket_origins(listeners: &[Listener]) -> Vec<(String, &'static str)> {
    listeners
        .iter()
        .map(|listener| {
            let raw = listener.fd.as_raw_fd();
            let address = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(raw)
                .map_or_else(|_| listener.key.clone(), |a| a.to_string());
            let origin = match listener.origin {
                Origin::Bound(_) => "bound",
                Origin::Unit => "inherited",
                Origin::Stored(_) => "stored",
            };
            (address, origin)
        })
        .collect()
}

/// `LISTEN_FDS` and `LISTEN_FDNAMES` for the workers, when the sockets sit at fds 3, 4, ... as
/// the systemd convention requires (in fd order); `None`, with a notice, when `=FD` placed them
/// otherwise.
fn listen_fds_env(described: &[Placement]) -> Option<(String, String)> {
    if described.is_empty() {
        return None;
    }
    let mut by_fd: Vec<&Placement> = described.iter().collect();
    by_fd.sort_by_key(|p| p.fd);
    let start = conventions::LISTEN_FDS_START;
    if !by_fd.iter().zip(start..).all(|(p, want)| p.fd == want) {
        info!(
            "sockets are not at fds {start}..{} (--port=...=FD): workers get SERVER_STARTER_PORT \
             only, not LISTEN_FDS",
            start + described.len() as RawFd - 1
        );
        return None;
    }
    let names: Vec<&str> = by_fd.iter().map(|p| p.fdname.as_str()).collect();
    Some((described.len().to_string(), names.join(":")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(key: &str, fd: RawFd) -> Placement {
        Placement {
            key: key.into(),
            fd,
            fdname: conventions::fdname_for(key),
        }
    }

    #[test]
    fn listen_fds_follow_fd_order_and_need_3_4_and_so_on() {
        let env = listen_fds_env(&[placed("80", 4), placed("/s", 3)]);
        assert_eq!(env, Some(("2".into(), "/s:80".into())));
        assert_eq!(listen_fds_env(&[placed("80", 3), placed("81", 5)]), None);
        assert_eq!(listen_fds_env(&[placed("80", 0)]), None);
        assert_eq!(listen_fds_env(&[]), None);
    }
}
