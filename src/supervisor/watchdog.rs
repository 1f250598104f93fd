//! `--worker-watchdog`: every worker (on trial or serving) must send `WATCHDOG=1` at least every
//! `worker_watchdog`, counting from its spawn. One that stops is sent SIGTERM, then SIGKILL after
//! `kill_old_timeout` (or [`FAILED_TRIAL_KILL_DELAY`]); its exit is then handled like any other
//! (a serving worker is replaced, a trial fails).

use std::time::Instant;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::vocab::Secs;
use crate::vocab::time::handover;

use super::worker::FAILED_TRIAL_KILL_DELAY;
use super::{Action, Pid, Supervisor};

/// The watchdog's view of the workers it watches (handed over as `watchdog_*` fields of the
/// supervisor's state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Watchdog {
    /// Watched workers and their last sign of life (spawn or `WATCHDOG=1`).
    #[serde(rename = "watchdog_seen", with = "handover")]
    pub(super) seen: Vec<(Pid, Instant)>,
    /// Workers signalled for silence, and when they get SIGKILL.
    #[serde(rename = "watchdog_hung", with = "handover")]
    pub(super) hung: Vec<(Pid, Instant)>,
    /// Workers killed for silence since start.
    #[serde(rename = "watchdog_kills")]
    pub(super) kills: u32,
}

impl Supervisor {
    /// A worker was spawned: watch it, if the watchdog is on.
    pub(super) fn watch(&mut self, pid: Pid, now: Instant) {
        if self.policy.worker_watchdog.is_some() {
            self.watchdog.seen.push((pid, now));
        }
    }

    /// `WATCHDOG=1` from `pid`.
    pub(super) fn pet(&mut self, pid: Pid, now: Instant) {
        if let Some(entry) = self.watchdog.seen.iter_mut().find(|(p, _)| *p == pid) {
            entry.1 = now;
        }
    }

    /// `pid` exited, or is no longer watched (leaving, or shutdown).
    pub(super) fn unwatch(&mut self, pid: Pid) {
        self.watchdog.seen.retain(|(p, _)| *p != pid);
        self.watchdog.hung.retain(|(p, _)| *p != pid);
    }

    /// Stops watching every worker: shutdown signals and kills them its own way.
    pub(super) fn unwatch_all(&mut self) {
        self.watchdog.seen.clear();
        self.watchdog.hung.clear();
    }

    /// The next moment the watchdog has something to do.
    pub(super) fn watchdog_deadline(&self) -> Option<Instant> {
        let every = self.policy.worker_watchdog?;
        let silent = self.watchdog.seen.iter().map(|(_, at)| *at + every);
        let kill = self.watchdog.hung.iter().map(|(_, at)| *at);
        silent.chain(kill).min()
    }

    /// Signals the workers silent for too long, kills those that did not exit in time.
    pub(super) fn check_watchdog(&mut self, now: Instant) {
        let Some(every) = self.policy.worker_watchdog else {
            return;
        };
        let leaving: Vec<Pid> = self.leaving.iter().map(|l| l.worker.pid).collect();
        self.watchdog.seen.retain(|(p, _)| !leaving.contains(p));
        let kill_after = self
            .policy
            .kill_old_timeout
            .unwrap_or(FAILED_TRIAL_KILL_DELAY);
        let (silent, watched): (Vec<_>, Vec<_>) = self
            .watchdog
            .seen
            .iter()
            .partition(|(_, at)| now >= *at + every);
        self.watchdog.seen = watched;
        for (pid, _) in silent {
            self.watchdog.kills += 1;
            warn!(
                worker_pid = pid,
                "worker {pid} sent no WATCHDOG=1 for {}, sending TERM (KILL in {})",
                Secs(every),
                Secs(kill_after)
            );
            self.watchdog.hung.push((pid, now + kill_after));
            self.actions.push(Action::Signal {
                pids: vec![pid],
                signal: Signal::SIGTERM,
            });
        }
        let (overdue, hung): (Vec<_>, Vec<_>) =
            self.watchdog.hung.iter().partition(|(_, at)| now >= *at);
        self.watchdog.hung = hung;
        for (pid, _) in overdue {
            warn!(
                worker_pid = pid,
                "worker {pid} still alive after its watchdog TERM, sending KILL"
            );
            self.actions.push(Action::Signal {
                pids: vec![pid],
                signal: Signal::SIGKILL,
            });
        }
    }
}
