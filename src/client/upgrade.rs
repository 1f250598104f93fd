//! `--upgrade`: the `upgrade` request on the control socket when there is one (the reply comes
//! from the new program once it runs, or from the old one with the reason it refused); else
//! SIGUSR2 to the start_server of `--pid-file`, then the outcome it writes beside that file
//! (`{PID_FILE}.upgrade`): `OK` from the new image, `FAILED` and the reason from the old one.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::Inotify;
use nix::sys::signal::Signal;

use super::process::{has_exited, pidfd, running_server, signal, watch_directory_of};
use crate::client::say;
use crate::config::cli::Cli;
use crate::error::{Error, Result};
use crate::wire::upgrade_report::{self, CHECK_TIMEOUT};

/// How long `--upgrade` waits for the outcome: the check's own bound, and time to exec.
pub const UPGRADE_TIMEOUT: Duration = CHECK_TIMEOUT.saturating_add(Duration::from_secs(20));

/// `--upgrade`: see the module documentation. Exit 0 once the new image runs.
pub fn upgrade(cli: &Cli) -> Result<()> {
    if super::control::reachable(cli) {
        return super::control::upgrade(cli, UPGRADE_TIMEOUT);
    }
    let path = cli.pid_file.as_deref().ok_or_else(|| {
        Error::usage("--upgrade needs --pid-file or --control to find the server")
    })?;
    let (_file, pid) = running_server(path)?;
    let report = upgrade_report::path(path);
    let before = std::fs::read_to_string(&report).ok();
    let changes = watch_directory_of(&report)?;
    let exited = pidfd(pid)?;
    signal(pid, Signal::SIGUSR2)?;
    let limit = cli.timeout.unwrap_or(UPGRADE_TIMEOUT);
    let deadline = Instant::now() + limit;
    loop {
        let now = std::fs::read_to_string(&report).ok();
        if let Some(outcome) = now
            .as_deref()
            .filter(|_| now != before)
            .and_then(upgrade_report::parse)
        {
            return match outcome {
                Ok(version) => {
                    say(&format!(
                        "start_server (pid:{pid}) upgraded: start_server {version} runs"
                    ));
                    Ok(())
                }
                Err(why) => Err(Error::runtime(format!(
                    "upgrade failed: {why}; start_server (pid {pid}) runs on as it was"
                ))),
            };
        }
        if has_exited(&exited) {
            return Err(Error::runtime(format!(
                "start_server (pid {pid}) exited during the upgrade"
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::runtime(format!(
                "start_server (pid {pid}) told nothing of the upgrade within {} (--timeout; see \
                 its log)",
                crate::vocab::Secs(limit)
            )));
        }
        wait(&changes, &exited, left)?;
    }
}

/// Sleeps until a file changes beside the pid file, start_server exits, or `limit` passes.
fn wait(changes: &Inotify, exited: &OwnedFd, limit: Duration) -> Result<()> {
    let mut fds = [
        PollFd::new(changes.as_fd(), PollFlags::POLLIN),
        PollFd::new(exited.as_fd(), PollFlags::POLLIN),
    ];
    let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(Error::runtime(format!("poll failed: {}", e.desc()))),
    }
    let _ = changes.read_events();
    Ok(())
}
