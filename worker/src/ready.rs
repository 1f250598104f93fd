//! Telling start_server (or systemd) that the worker is ready: `READY=1` and `STATUS=...` on
//! `NOTIFY_SOCKET`. Under start_server this makes a reload finish as soon as the new worker can
//! serve, instead of after `--interval`.
//!
//! ```
//! // Outside start_server and systemd there is no NOTIFY_SOCKET: nothing is sent.
//! # // SAFETY: nothing else runs in this example's process.
//! # unsafe { std::env::remove_var("NOTIFY_SOCKET") };
//! assert!(!server_starter_worker::ready::notify("READY=1\nSTATUS=serving").unwrap());
//! ```

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The address a `NOTIFY_SOCKET` value names: a path, or `@name` in the abstract namespace.
/// [`notify`] uses it for each message; a worker that sends many (`STATUS=` as it works) can
/// connect one `UnixDatagram` to it instead, and start_server reads its own notify sockets'
/// values with it, so both sides agree on the `@` rule.
pub fn socket_addr(value: &std::ffi::OsStr) -> io::Result<SocketAddr> {
    match value.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(value),
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `NOTIFY_SOCKET` (a path, or `@name` in
/// the abstract namespace). Returns `Ok(false)` when the variable is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &socket_addr(&target)?)?;
    Ok(true)
}
