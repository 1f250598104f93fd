//! The signals start_server receives as events (their names are in `vocab::signal`).
//!
//! Every signal start_server reacts to is blocked from the start and read from a signalfd by the
//! event loop, so nothing runs in a signal handler and no signal is lost between two waits.
//! Workers get an empty mask back before exec (see `spawn`).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Instant;

use nix::poll::PollFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{Context, Result};
use crate::server::event::{Event, Received, Source};

const TERMINATING: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
];

/// Asynchronous signals whose default action would end start_server although it has no use for
/// them (besides the real-time ones, [`Received::Unused`]): a supervisor must not die of a stray `kill -PWR`. As PID 1
/// the kernel would drop them anyway; elsewhere they are caught the same way, so start_server
/// behaves alike in and out of a container. Stop signals (TSTP, TTIN, TTOU) keep their default,
/// and synchronous ones (SEGV, BUS, ...) are never blocked.
const UNUSED: [Signal; 6] = [
    Signal::SIGPWR,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
];

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in TERMINATING.into_iter().chain(UNUSED) {
        set.add(signal);
    }
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGUSR2);
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGALRM);
    let mut raw = *set.as_ref();
    for number in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: adding a valid signal number to an initialized set.
        unsafe { libc::sigaddset(&mut raw, number) };
    }
    // SAFETY: `raw` was initialized by SigSet::empty.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

/// Blocks every signal start_server handles. Done first thing, so that a signal arriving during
/// set-up waits for the event loop instead of killing the process half-way.
pub fn block_handled() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
        .context(|| "failed to block signals".to_string())
}

/// Whether start_server's caller had SIGXFSZ ignored already.
static XFSZ_WAS_IGNORED: AtomicBool = AtomicBool::new(false);

/// Ignores SIGPIPE and SIGXFSZ, so that a log reader that is gone or a log file at
/// `RLIMIT_FSIZE` is a write error (a dropped line) instead of start_server's death. Workers get
/// SIGPIPE at its default and SIGXFSZ as start_server's caller left it (see `spawn`).
pub fn ignore_write_faults() {
    // SAFETY: setting a disposition to SIG_IGN installs no handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let before = libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        XFSZ_WAS_IGNORED.store(before == libc::SIG_IGN, Ordering::Relaxed);
    }
}

/// Whether start_server's caller had SIGXFSZ ignored: an upgrade in place hands it to the next
/// image, which finds SIGXFSZ ignored by start_server itself.
pub fn xfsz_was_ignored() -> bool {
    XFSZ_WAS_IGNORED.load(Ordering::Relaxed)
}

/// After an upgrade in place: what the first image found (see [`xfsz_was_ignored`]).
pub fn restore_xfsz_was_ignored(ignored: bool) {
    XFSZ_WAS_IGNORED.store(ignored, Ordering::Relaxed);
}

/// SIGXFSZ's disposition for a child: what start_server inherited, not its own SIG_IGN.
pub fn child_xfsz() -> libc::sighandler_t {
    if XFSZ_WAS_IGNORED.load(Ordering::Relaxed) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    }
}

/// The blocked signals, readable as a file descriptor.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Opens a signalfd for the handled signals (which [`block_handled`] must have blocked).
    pub fn open() -> Result<Signals> {
        let fd = SignalFd::with_flags(&handled(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context(|| "failed to create a signalfd".to_string())?;
        Ok(Signals { fd })
    }

    /// Every signal pending now, oldest first; empty when none is.
    pub fn drain(&mut self) -> Result<Vec<Received>> {
        let mut received = Vec::new();
        while let Some(info) = self
            .fd
            .read_signal()
            .context(|| "failed to read the signalfd".to_string())?
        {
            let number = info.ssi_signo as i32;
            received.push(match Signal::try_from(number) {
                Ok(Signal::SIGHUP) => Received::Hangup,
                Ok(Signal::SIGUSR2) => Received::Upgrade,
                Ok(Signal::SIGCHLD) => Received::Child,
                Ok(Signal::SIGALRM) => Received::Ignored,
                Ok(s) if TERMINATING.contains(&s) => Received::Terminate(s),
                _ => Received::Unused(number),
            });
        }
        Ok(received)
    }
}

impl Source for Signals {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        vec![(self.fd.as_fd(), PollFlags::POLLIN)]
    }

    fn on_ready(&mut self, ready: &[PollFlags], _: Instant, events: &mut Vec<Event>) -> Result<()> {
        if !ready.iter().all(PollFlags::is_empty) {
            events.extend(self.drain()?.into_iter().map(Event::Signal));
        }
        Ok(())
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_asynchronous_signals_only() {
        let set = handled();
        assert!(set.contains(Signal::SIGPWR) && !set.contains(Signal::SIGTSTP));
        assert!(!set.contains(Signal::SIGSEGV) && !set.contains(Signal::SIGWINCH));
    }
}
