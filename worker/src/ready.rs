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
use std::os::unix::net::UnixDatagram;

use crate::conventions::notify_socket_addr;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to `NOTIFY_SOCKET` (a path, or `@name` in
/// the abstract namespace). Returns `Ok(false)` when the variable is not set.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &notify_socket_addr(&target)?)?;
    Ok(true)
}
