//! `--max-extra`: a rolling reload. The starting generation's copies are spawned one by one,
//! its own worker (slot 0) last, never with more than N + `max_extra` workers alive; as each
//! copy comes up, the serving generation's copy in its slot leaves. A failed start gives the
//! serving generation back the copies it had already given up.

use std::time::Instant;

use tracing::info;

use super::{Action, Supervisor};

impl Supervisor {
    /// A copy is up: in a rolling reload, the serving generation's copy in its slot leaves.
    pub(super) fn copy_up(&mut self, generation: u64, slot: usize, now: Instant) {
        self.replacement_up(generation, slot, now);
        if self.policy.max_extra.is_none()
            || !self.is_trial(generation)
            || self.canary_bakes(generation, slot, now)
        {
            return;
        }
        let Some(serving) = self.current.map(|w| w.generation) else {
            return;
        };
        let Some(index) = self
            .copies
            .iter()
            .position(|c| c.generation == serving && c.slot == slot)
        else {
            return;
        };
        let old = self.copies.remove(index);
        if let Some(pid) = old.pid {
            info!(
                generation = serving,
                worker_pid = pid,
                "rolling reload: slot {slot} replaced, sending {} to worker {pid}",
                crate::vocab::signal::short_name(self.policy.signal_on_hup)
            );
            self.retire_pids(&[(serving, slot, pid)], now, true);
        }
    }

    /// After a failed start: the serving generation gets back the copies a rolling reload had
    /// already retired.
    pub(super) fn refill_slots(&mut self) {
        let Some(serving) = self.current.map(|w| w.generation) else {
            return;
        };
        for slot in 1..self.slots {
            if !self
                .copies
                .iter()
                .any(|c| c.generation == serving && c.slot == slot)
            {
                self.add_copy(serving, slot, true);
            }
        }
    }

    /// Workers alive or being spawned, leaving ones included: what `max_extra` bounds.
    pub(super) fn occupied(&self) -> usize {
        let trial = self
            .trial
            .as_ref()
            .is_some_and(|t| !t.deferred && t.failed_at.is_none());
        usize::from(self.current.is_some())
            + usize::from(trial)
            + self.leaving.len()
            + self.copies.iter().filter(|c| c.requested).count()
    }

    /// A rolling reload (`max_extra`): spawns the starting generation's copies one by one, then
    /// its own worker (slot 0) last, never with more than N + `max_extra` workers alive.
    pub(super) fn roll(&mut self) {
        let Some(extra) = self.policy.max_extra else {
            return;
        };
        let limit = self.slots + extra;
        while self.occupied() < limit {
            let Some(trial) = self.trial.as_ref().filter(|t| t.failed_at.is_none()) else {
                return;
            };
            let (generation, deferred) = (trial.generation, trial.deferred);
            if self.canary_holds_the_roll(generation) {
                return;
            }
            if let Some(copy) = self
                .copies
                .iter_mut()
                .filter(|c| c.generation == generation && !c.requested && !c.up)
                .filter(|c| c.respawn_at.is_none())
                .min_by_key(|c| c.slot)
            {
                copy.requested = true;
                let slot = copy.slot;
                self.actions.push(Action::SpawnCopy { generation, slot });
            } else if deferred {
                if let Some(trial) = self.trial.as_mut() {
                    trial.deferred = false;
                }
                self.actions.push(Action::Spawn { generation });
            } else {
                return;
            }
        }
    }
}
