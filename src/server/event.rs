//! What the event loop waits for. Every source of events (signals, workers' notifications, the
//! control socket, watched files, timers of the log command and of systemd's watchdog) is a
//! [`Source`]: it says which fds to wait on and until when, and turns what is ready into
//! [`Event`]s. A new source is one module that implements [`Source`], one [`Event`] variant if
//! it has news for the supervisor, and one arm where the loop dispatches it.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Instant;

use nix::poll::PollFlags;
use nix::sys::signal::Signal;

use crate::error::Result;
use crate::vocab::Pid;
use crate::wire::control::Request;

/// A control socket client, by a number that is never reused.
pub type ClientId = u64;

/// Something that happened, for the loop to hand to the supervisor or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal was received.
    Signal(Received),
    /// A worker (or a descendant of it) sent a notification (`READY=1`, `STATUS=`, ...).
    Message { worker: Pid, text: String },
    /// A control client asked something.
    Request { client: ClientId, request: Request },
    /// A watched path changed (`--reload-on-change`), and the changes have settled.
    Changed(PathBuf),
    /// The new binary's `--upgrade-check` is over (passed, failed, or out of time).
    UpgradeChecked,
    /// A worker whose start is awaited (or a process it started) waits for connections on a
    /// passed socket, as `how` says (`--ready=listening`).
    Listening { worker: Pid, how: String },
    /// A request to the metrics endpoint (`--metrics-listen`) can be answered.
    Scrape,
    /// Time to measure the workers' memory (`--worker-max-memory`).
    MemoryCheck,
}

/// What a received signal means to start_server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGHUP: start a new generation.
    Hangup,
    /// SIGTERM, SIGINT, SIGQUIT, SIGUSR1: stop the workers and exit.
    Terminate(Signal),
    /// SIGUSR2: replace start_server's own program with its binary (see `upgrade`).
    Upgrade,
    /// SIGCHLD: reap children.
    Child,
    /// SIGALRM: ignored, as by the original (which uses it internally).
    Ignored,
    /// A signal start_server has no use for but that would kill it by default: logged and
    /// ignored. Its number (real-time signals have no [`Signal`]).
    Unused(i32),
}

/// A source of events (see the module documentation).
pub trait Source {
    /// The fds to wait on, with the events wanted of each.
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        Vec::new()
    }

    /// The next moment it has something to do without any fd being ready.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// After each wait: `ready` holds what happened to its fds (in [`Source::interest`]'s
    /// order, empty flags for those with nothing), `now` is the time; it adds its events, or
    /// does its own timed work. An error ends the loop (a source that can no longer be read
    /// would wake it again and again).
    fn on_ready(
        &mut self,
        ready: &[PollFlags],
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<()>;
}
