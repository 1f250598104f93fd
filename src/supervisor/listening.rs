//! `--ready=listening`: a new worker also counts as started the moment it (or a process it
//! started) waits for connections on a socket start_server passed it. Seeing it is the OS
//! layer's business (a probe of /proc, run only while some worker is awaited:
//! [`Supervisor::awaiting_listening`]); its finding arrives here like a `READY=1`
//! ([`Supervisor::listening`]). A worker seen neither way is judged by `--interval`, as with
//! `--ready=notify`: said once in the log.

use std::time::Instant;

use tracing::{info, warn};

use super::{Action, Pid, Supervisor};
use crate::vocab::Secs;

/// What counts a new worker as started besides `READY=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ready {
    /// `READY=1`, else alive after `--interval` (the original's rule).
    #[default]
    Notify,
    /// `READY=1`, or waiting for connections on a passed socket; else alive after `--interval`.
    Listening,
}

impl Supervisor {
    /// The workers whose start is awaited and may be seen listening: the trial's own worker and
    /// every copy not yet up. Empty unless `--ready=listening`, and while stopping.
    pub fn awaiting_listening(&self) -> Vec<Pid> {
        if self.policy.ready != Ready::Listening || self.shutting_down() {
            return Vec::new();
        }
        let trial = self
            .trial
            .as_ref()
            .filter(|t| t.failed_at.is_none() && !t.leader_up)
            .and_then(|t| t.pid);
        let copies = self.copies.iter().filter(|c| !c.up).filter_map(|c| c.pid);
        trial.into_iter().chain(copies).collect()
    }

    /// Worker `pid` (or a process it started) waits for connections on a passed socket, as
    /// `how` says: it counts as started, as with `READY=1`.
    pub fn listening(&mut self, pid: Pid, how: &str, now: Instant) -> Vec<Action> {
        if self.shutting_down() {
            return self.take_actions();
        }
        if let Some(copy) = self.copies.iter_mut().find(|c| c.pid == Some(pid) && !c.up) {
            copy.up = true;
            let (generation, slot) = (copy.generation, copy.slot);
            info!(
                generation,
                worker_pid = pid,
                "worker {pid} in slot {slot} is listening ({how})"
            );
            self.copy_up(generation, slot, now);
            self.promote_if_all_up(now);
        } else if let Some(trial) = self
            .trial
            .as_mut()
            .filter(|t| t.pid == Some(pid) && t.failed_at.is_none() && !t.leader_up)
        {
            trial.leader_up = true;
            let generation = trial.generation;
            info!(
                generation,
                worker_pid = pid,
                "new worker {pid} is listening ({how})"
            );
            self.promote_if_all_up(now);
        }
        self.take_actions()
    }

    /// A worker of `generation` counted as started for being alive after `--interval`: with
    /// `--ready=listening`, the first time, the log says it was not seen listening.
    pub(super) fn note_interval_fallback(&mut self, generation: u64) {
        if self.policy.ready == Ready::Listening && !self.interval_fallback_said {
            self.interval_fallback_said = true;
            warn!(
                generation,
                "generation {generation} was not seen waiting on a passed socket within \
                 --interval ({}): counted as started for being alive, as with --ready=notify \
                 (said once: the server may wait in a way /proc does not show, such as io_uring, \
                 or start slower than --interval)",
                Secs(self.policy.interval)
            );
        }
    }

    /// What a new worker must do to count as started, and its absence, for the log and the
    /// reason of a failed start: `send READY=1` and `no READY=1`, or with `--ready=listening`
    /// the same with listening on a passed socket.
    pub(super) fn ready_words(&self) -> (&'static str, &'static str) {
        match self.policy.ready {
            Ready::Notify => ("send READY=1", "no READY=1"),
            Ready::Listening => (
                "send READY=1 or listen on a passed socket",
                "neither READY=1 nor listening",
            ),
        }
    }
}

#[cfg(test)]
mod tests;
