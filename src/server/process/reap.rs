//! Children that exited, reaped without blocking; signals sent to processes; and the bounded
//! waits of a stop.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tracing::error;

use crate::server::process::signals::Signals;
use crate::vocab::{ExitStatus, Pid};

/// Every child that has exited, without blocking.
pub fn reap() -> Vec<(Pid, ExitStatus)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return exited,
            Ok(status) => {
                if let Some(exit) = raw_status(status) {
                    exited.push(exit);
                }
            }
            Err(Errno::EINTR) => {}
            // ECHILD: no children left; nothing else is expected from a WNOHANG wait.
            Err(_) => return exited,
        }
    }
}

/// The wait status as the kernel encodes it (`ExitStatus` keeps that form); `None` for a
/// stop or continue, which a wait without WUNTRACED/WCONTINUED does not report.
fn raw_status(status: WaitStatus) -> Option<(Pid, ExitStatus)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitStatus((code & 0xff) << 8))),
        WaitStatus::Signaled(pid, signal, core) => Some((
            pid.as_raw(),
            ExitStatus(signal as i32 | if core { 0x80 } else { 0 }),
        )),
        _ => None,
    }
}

/// start_server's children, from /proc (a subreaper also has adopted orphans among them).
pub fn children() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `signal` to each of `pids`; one already gone is no error.
pub fn send(pids: &[Pid], signal: Signal) {
    for &pid in pids {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => error!("failed to send {} to worker {pid}: {}", signal, e.desc()),
        }
    }
}

/// Waits (bounded) until none of `pids` is left, reaping them; the signalfd wakes it when a
/// child exits.
pub fn wait_for_exit(signals: &mut Signals, pids: &mut BTreeSet<Pid>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !pids.is_empty() && Instant::now() < deadline {
        for (pid, _) in reap() {
            pids.remove(&pid);
        }
        if pids.is_empty() {
            return;
        }
        let timeout = TimeSpec::from(deadline.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, Some(timeout), None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
        if signals.drain().is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_keep_the_kernels_encoding() {
        let pid = nix::unistd::Pid::from_raw(42);
        let exited = raw_status(WaitStatus::Exited(pid, 1)).unwrap();
        assert_eq!(exited, (42, ExitStatus(256)));
        assert!(libc::WIFEXITED(exited.1.0) && libc::WEXITSTATUS(exited.1.0) == 1);
        let killed = raw_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).unwrap();
        assert!(libc::WIFSIGNALED(killed.1.0) && libc::WTERMSIG(killed.1.0) == libc::SIGKILL);
        let dumped = raw_status(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)).unwrap();
        assert!(libc::WCOREDUMP(dumped.1.0) && libc::WTERMSIG(dumped.1.0) == libc::SIGSEGV);
        assert_eq!(raw_status(WaitStatus::Continued(pid)), None);
    }
}
