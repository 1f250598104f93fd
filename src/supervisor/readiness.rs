//! When a trial counts as started or failed: `READY=1`, or alive `interval` after its spawn, or
//! silent past `ready_timeout`; and when a failed one is retried.

use std::borrow::Cow;
use std::time::Instant;

use tracing::{info, warn};

use crate::vocab::Secs;
use crate::vocab::text::printable;

use super::{Pid, Supervisor};

/// What the supervisor reads in a notification: the rest of it is ignored.
#[derive(Debug)]
pub(super) struct Message<'a> {
    /// A `READY=1` line.
    pub(super) ready: bool,
    /// The last `STATUS=` line's text, its control characters escaped: it is shown to
    /// operators' terminals (`--status`), the log and systemd.
    pub(super) status: Option<Cow<'a, str>>,
    /// A `WATCHDOG=1` line.
    pub(super) watchdog: bool,
}

impl<'a> Message<'a> {
    pub(super) fn parse(text: &'a str) -> Self {
        Message {
            ready: text.lines().any(|l| l == "READY=1"),
            status: text
                .lines()
                .filter_map(|l| l.strip_prefix("STATUS="))
                .next_back()
                .map(printable),
            watchdog: text.lines().any(|l| l == "WATCHDOG=1"),
        }
    }
}

impl Supervisor {
    /// When the running trial is judged (not failed) or retried (failed).
    pub(super) fn trial_deadline(&self) -> Option<Instant> {
        let trial = self.trial.as_ref()?;
        let spawned = trial.spawned_at?;
        match trial.failed_at {
            None => trial
                .pid
                .filter(|_| !trial.leader_up)
                .map(|_| spawned + self.policy.ready_timeout.unwrap_or(self.policy.interval)),
            Some(failed) => Some((spawned + self.policy.interval).max(failed) + self.backoff()),
        }
    }

    /// A notification from `pid`: if it is the trial's (not yet failed), keeps its `STATUS=` and
    /// promotes it on `READY=1`. Returns whether it was the trial's.
    pub(super) fn trial_notified(&mut self, pid: Pid, message: &Message, now: Instant) -> bool {
        let stopping = self.stopping;
        let Some(trial) = self
            .trial
            .as_mut()
            .filter(|t| t.pid == Some(pid) && t.failed_at.is_none())
        else {
            return false;
        };
        if let Some(status) = &message.status {
            trial.status = Some(status.to_string());
        }
        if message.ready && !stopping {
            let (generation, status) = (trial.generation, trial.status.take());
            info!(
                generation,
                worker_pid = pid,
                "new worker {pid} is ready (READY=1)"
            );
            let _ = generation;
            trial.status = status;
            trial.leader_up = true;
            self.promote_if_all_up(now);
        }
        true
    }

    /// Once the trial's deadline has passed: a silent worker still alive is promoted (or, with
    /// `ready_timeout`, stopped as failed); a failed trial is followed by the next generation.
    pub(super) fn judge_trial(&mut self, now: Instant) {
        let Some(trial) = &self.trial else {
            return;
        };
        match (trial.failed_at, trial.pid, self.trial_deadline()) {
            (None, Some(pid), Some(due)) if now >= due => {
                let generation = trial.generation;
                match self.policy.ready_timeout {
                    None => {
                        if let Some(trial) = self.trial.as_mut() {
                            trial.leader_up = true;
                        }
                        self.note_interval_fallback(generation);
                        self.promote_if_all_up(now);
                    }
                    Some(limit) => {
                        let (to_do, not_done) = self.ready_words();
                        warn!(
                            generation,
                            worker_pid = pid,
                            "new worker {pid} did not {to_do} within {}, stopping it",
                            Secs(limit)
                        );
                        self.discard(generation, pid, now);
                        self.trial_failed(format!("{not_done} within {}", Secs(limit)), now);
                    }
                }
            }
            (Some(_), _, Some(due)) if now >= due => self.begin_generation(),
            _ => {}
        }
    }
}
