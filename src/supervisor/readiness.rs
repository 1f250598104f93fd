//! When a trial counts as started or failed: `READY=1`, or alive `interval` after its spawn, or
//! silent past `ready_timeout`.

use std::time::Instant;

use super::Supervisor;

impl Supervisor {
    /// When the running trial is judged (not failed) or retried (failed).
    pub(super) fn trial_deadline(&self) -> Option<Instant> {
        let trial = self.trial.as_ref()?;
        let spawned = trial.spawned_at?;
        match trial.failed_at {
            None => trial
                .pid
                .map(|_| spawned + self.policy.ready_timeout.unwrap_or(self.policy.interval)),
            Some(failed) => Some((spawned + self.policy.interval).max(failed) + self.backoff()),
        }
    }
}
