//! The conventions a worker's sockets and readiness are described in, as text: the parsers that
//! [`Listeners`](crate::Listeners) and [`ready::notify`](crate::ready::notify) use, public for a
//! worker that reads the variables itself, and for start_server, which writes what these read
//! (so both sides agree on what is valid).
//!
//! - `SERVER_STARTER_PORT`: `;`-separated `KEY=FD` entries ([`parse_port_env`]).
//! - `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`: systemd's socket passing, sockets at fds
//!   [`LISTEN_FDS_START`], 4, ... ([`parse_listen_fds`]).
//! - `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace ([`notify_socket_addr`]).

mod listen_fds;
mod port_env;

pub use listen_fds::parse as parse_listen_fds;
pub use listen_fds::{ParseError as ListenFdsError, START as LISTEN_FDS_START};
pub use port_env::parse as parse_port_env;
pub use port_env::{ParseError as PortEnvError, PortEntry, VAR as PORT_ENV_VAR};

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;

/// The address a `NOTIFY_SOCKET` value names: a path, or `@name` in the abstract namespace.
/// [`ready::notify`](crate::ready::notify) uses it for each message; a worker that sends many
/// (`STATUS=` as it works) can connect one `UnixDatagram` to it instead.
pub fn notify_socket_addr(value: &std::ffi::OsStr) -> io::Result<SocketAddr> {
    match value.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(value),
    }
}
