//! `--daemonize`: start_server leaves its caller's session and process group.

use std::fs::OpenOptions;

use tracing::warn;

use crate::error::{Context, Result};
use crate::server::log::output::dup_onto_standard;

/// Fork, setsid, fork: the parents leave with `_exit(0)` (so they remove no socket file), the
/// grandchild goes on with standard input from /dev/null. (The original keeps stdin when a socket
/// sits at fd 0; here sockets reach fd 0 only in the worker, so that case needs nothing.)
pub fn daemonize() -> Result<()> {
    for round in 0..2 {
        // SAFETY: start_server is single-threaded here (no thread holds a lock the child could
        // need), and the parent only calls _exit. (nix's fork is just as unsafe and adds nothing
        // for a parent that leaves at once.)
        match unsafe { libc::fork() } {
            -1 => {
                return Err(std::io::Error::last_os_error()).context(|| "fork failed".into());
            }
            0 => {}
            // SAFETY: the parent leaves at once, without running destructors (which would remove
            // the socket files the daemon keeps).
            _ => unsafe { libc::_exit(0) },
        }
        if round == 0 {
            nix::unistd::setsid().context(|| "setsid failed".to_string())?;
        }
    }
    let null = OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .context(|| "failed to open /dev/null".to_string())?;
    if let Err(e) = dup_onto_standard(&null, 0) {
        warn!("failed to point stdin at /dev/null: {}", e.desc());
    }
    Ok(())
}
