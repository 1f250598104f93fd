//! `--bake=SECONDS`: a new generation that is up serves beside the one before it for SECONDS
//! (both accept on the same sockets) while it stays on trial; the one before is signalled only
//! when the bake ends, and the generation is promoted then (`READY=1` to systemd, the reload's
//! answer). If a worker of it exits or misses its `--worker-watchdog` meanwhile, it is *rolled
//! back*: its workers get `--signal-on-hup` (SIGKILL after `--kill-old-timeout`, or
//! [`FAILED_TRIAL_KILL_DELAY`]), the generation before stays current as if the reload had failed
//! to start, and nothing retries it (the same code would fail again): the next reload does.
//! Every exit rolls back, so a generation that starts crash looping is rolled back at its first
//! death.
//!
//! With `--max-extra` (a rolling reload), the first copy to come up is a *canary*: it bakes
//! beside the copy it replaces, the roll spawning nothing else meanwhile; the other slots are
//! replaced once it baked, without a bake of their own. A canary that fails is rolled back
//! alone, the other slots untouched.
//!
//! `--kill-old-delay` counts from the end of the bake: the generation before is signalled
//! `--bake` plus `--kill-old-delay` after the new one came up, and only the bake can roll back.
//! A bake needs a generation to roll back to: a first start, or a start after the serving worker
//! died, is promoted at once; if the serving generation's last worker dies during the bake, the
//! baking one takes over at once.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::worker::FAILED_TRIAL_KILL_DELAY;
use super::{Action, ExitStatus, Leaving, Notice, Pid, ReloadResult, Supervisor, Worker};
use crate::vocab::Secs;
use crate::vocab::signal::short_name;
use crate::vocab::time::handover;

/// A generation (or its canary) up and baking beside the one that serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Bake {
    /// The generation on trial that bakes.
    pub(super) generation: u64,
    /// With `--max-extra`: the slot of its canary, the one copy that bakes.
    #[serde(default)]
    pub(super) canary: Option<usize>,
    /// When it began (the generation, or its canary, was up).
    #[serde(with = "handover")]
    pub(super) since: Instant,
    /// When it ends.
    #[serde(with = "handover")]
    pub(super) until: Instant,
    /// It ended well: the canary baked (the roll goes on), or the generation is promoted now.
    #[serde(default)]
    pub(super) over: bool,
}

impl Supervisor {
    /// The bake under way: the trial's, not over.
    pub(super) fn baking(&self) -> Option<&Bake> {
        let trial = self.trial.as_ref().filter(|t| t.failed_at.is_none())?;
        self.bake
            .as_ref()
            .filter(|b| b.generation == trial.generation && !b.over)
    }

    /// When the bake under way ends.
    pub(super) fn bake_deadline(&self) -> Option<Instant> {
        self.baking().map(|b| b.until)
    }

    /// The baking generation's own worker (slot 0), listed in the status file beside the
    /// generation that serves: it is live, and serves too. None for a canary's bake.
    pub(super) fn baking_leader(&self) -> Option<Worker> {
        let bake = self.baking().filter(|b| b.canary.is_none())?;
        let pid = self.trial.as_ref()?.pid?;
        Some(Worker {
            generation: bake.generation,
            pid,
        })
    }

    /// Whether the trial's `generation`, every worker of it up, must bake (or go on baking)
    /// before it is promoted; its bake begins the first time. Nothing bakes when nothing serves
    /// (there is nothing to roll back to). Once the bake is over, `Baked` is told (before the
    /// promotion's `Serving`).
    pub(super) fn bakes_first(&mut self, generation: u64, now: Instant) -> bool {
        if self.policy.bake.is_zero() {
            return false;
        }
        if self.current.is_none() {
            self.bake = None;
            return false;
        }
        match self.bake.as_ref().filter(|b| b.generation == generation) {
            Some(bake) if bake.over => {
                let baked = bake.until.saturating_duration_since(bake.since);
                self.bake = None;
                if let Some(pid) = self.trial.as_ref().and_then(|t| t.pid) {
                    let worker = Worker { generation, pid };
                    self.actions
                        .push(Action::Notify(Notice::Baked { worker, baked }));
                }
                false
            }
            Some(_) => true,
            None => {
                self.begin_bake(generation, None, now);
                true
            }
        }
    }

    /// A rolling reload's copy in `slot` is up: if it is the first (the canary), it bakes, and
    /// the copy it replaces stays meanwhile. Whether that copy must stay for now.
    pub(super) fn canary_bakes(&mut self, generation: u64, slot: usize, now: Instant) -> bool {
        if self.policy.bake.is_zero() || self.current.is_none() {
            return false;
        }
        match self.bake.as_ref().filter(|b| b.generation == generation) {
            Some(bake) => !bake.over,
            None => {
                self.begin_bake(generation, Some(slot), now);
                true
            }
        }
    }

    /// Whether a rolling reload must spawn nothing more for now: its canary is spawned and has
    /// not baked yet.
    pub(super) fn canary_holds_the_roll(&self, generation: u64) -> bool {
        if self.policy.bake.is_zero() || self.current.is_none() {
            return false;
        }
        match self.bake.as_ref().filter(|b| b.generation == generation) {
            Some(bake) => !bake.over,
            None => self
                .copies
                .iter()
                .any(|c| c.generation == generation && c.requested),
        }
    }

    fn begin_bake(&mut self, generation: u64, canary: Option<usize>, now: Instant) {
        let length = self.policy.bake;
        self.bake = Some(Bake {
            generation,
            canary,
            since: now,
            until: now + length,
            over: false,
        });
        let serving = self.current;
        let which = match canary {
            Some(slot) => format!("its worker in slot {slot} is up and bakes (the canary)"),
            None => "it is up and bakes".to_string(),
        };
        info!(
            generation,
            "generation {generation}: {which} for {} beside generation {} before the old \
             workers are signalled; a failure meanwhile rolls it back",
            Secs(length),
            serving.map_or("?".to_string(), |w| w.generation.to_string())
        );
        self.actions.push(Action::Notify(Notice::Baking {
            generation,
            canary,
            left: length,
            serving,
        }));
        self.update_status();
    }

    /// Time passed: a worker of the baking generation silent past `--worker-watchdog` rolls it
    /// back; a bake whose time is over ends well (a canary's: the roll goes on).
    pub(super) fn tick_bake(&mut self, now: Instant) {
        self.check_bake_watchdog(now);
        let Some(bake) = self.baking().filter(|b| now >= b.until).cloned() else {
            return;
        };
        if let Some(bake) = self.bake.as_mut() {
            bake.over = true;
        }
        let (generation, baked) = (bake.generation, bake.until - bake.since);
        match bake.canary {
            Some(slot) => {
                info!(
                    generation,
                    "generation {generation}: the canary in slot {slot} baked {}, replacing \
                     the other slots",
                    Secs(baked)
                );
                let up: Vec<usize> = (self.copies.iter())
                    .filter(|c| c.generation == generation && c.up)
                    .map(|c| c.slot)
                    .collect();
                for slot in up {
                    self.copy_up(generation, slot, now);
                }
                self.roll();
            }
            None => info!(generation, "generation {generation} baked {}", Secs(baked)),
        }
        self.promote_if_all_up(now);
    }

    fn check_bake_watchdog(&mut self, now: Instant) {
        let (Some(every), Some(generation)) = (
            self.policy.worker_watchdog,
            self.baking().map(|b| b.generation),
        ) else {
            return;
        };
        let ours = self.pids_of(generation);
        let silent = (self.watchdog.seen.iter())
            .find(|(pid, at)| ours.contains(pid) && now >= *at + every)
            .map(|(pid, _)| *pid);
        if let Some(pid) = silent {
            self.watchdog.kills += 1;
            warn!(
                generation,
                worker_pid = pid,
                "worker {pid} of generation {generation} sent no WATCHDOG=1 for {} during the bake",
                Secs(every)
            );
            self.roll_back(
                format!("worker {pid} sent no WATCHDOG=1 for {}", Secs(every)),
                now,
            );
        }
    }

    /// `pid` exited: if it was a worker of the baking generation, the generation is rolled
    /// back. Returns whether it was.
    pub(super) fn baking_worker_exited(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        now: Instant,
    ) -> bool {
        let Some(generation) = self.baking().map(|b| b.generation) else {
            return false;
        };
        if let Some(trial) = self.trial.as_mut().filter(|t| t.pid == Some(pid)) {
            trial.pid = None;
        } else if let Some(copy) =
            (self.copies.iter_mut()).find(|c| c.generation == generation && c.pid == Some(pid))
        {
            copy.pid = None;
        } else {
            return false;
        }
        warn!(
            generation,
            worker_pid = pid,
            "worker {pid} of generation {generation} exited during the bake, status:{status}"
        );
        self.roll_back(format!("worker {pid} exited, status:{status}"), now);
        true
    }

    /// The serving generation's last worker died during a bake: the baking generation takes
    /// over at once (nothing is left to roll back to). Returns whether it did.
    pub(super) fn takes_over_from_the_dead(
        &mut self,
        pid: Pid,
        status: ExitStatus,
        now: Instant,
    ) -> bool {
        let Some(bake) = self.baking().filter(|b| b.canary.is_none()) else {
            return false;
        };
        let generation = bake.generation;
        warn!(
            worker_pid = pid,
            "worker {pid} died with status:{status} during the bake of generation {generation}, \
             which takes over now"
        );
        self.bake = None;
        self.promote_if_all_up(now);
        true
    }

    /// The pids of `generation`'s workers: the trial's own, and its copies.
    fn pids_of(&self, generation: u64) -> Vec<Pid> {
        let own = (self.trial.as_ref())
            .filter(|t| t.generation == generation)
            .and_then(|t| t.pid);
        let copies = (self.copies.iter())
            .filter(|c| c.generation == generation)
            .filter_map(|c| c.pid);
        own.into_iter().chain(copies).collect()
    }

    /// The baking generation failed (`why`): its workers are stopped, the generation before
    /// stays current, nothing retries it; the reload's outcome says it was rolled back. A HUP
    /// received during the bake starts the next generation now.
    fn roll_back(&mut self, why: String, now: Instant) {
        let Some(bake) = self.bake.take() else {
            return;
        };
        let generation = bake.generation;
        let outcome = format!("generation {generation} failed during the bake: {why}");
        let mut running: Vec<(usize, Pid)> = (self.trial.take())
            .and_then(|t| t.pid)
            .map(|pid| (0, pid))
            .into_iter()
            .collect();
        running.extend(
            (self.copies.iter())
                .filter(|c| c.generation == generation)
                .filter_map(|c| c.pid.map(|pid| (c.slot, pid))),
        );
        self.copies.retain(|c| c.generation != generation);
        let kill_at = now
            + self
                .policy
                .kill_old_timeout
                .unwrap_or(FAILED_TRIAL_KILL_DELAY);
        for &(slot, pid) in &running {
            self.unwatch(pid);
            self.leaving.push(Leaving {
                worker: Worker { generation, pid },
                slot,
                signal_at: None,
                kill_at: Some(kill_at),
                note_at: None,
                served: false,
            });
        }
        let mut pids: Vec<Pid> = running.iter().map(|&(_, pid)| pid).collect();
        pids.sort();
        let serving = self.current;
        let stopping = if pids.is_empty() {
            String::new()
        } else {
            let signal = short_name(self.policy.signal_on_hup);
            format!("; sending {signal} to its workers:{}", super::join(&pids))
        };
        warn!(
            generation,
            "rolled back: {outcome}{stopping}; generation {} serves on",
            serving.map_or("?".to_string(), |w| w.generation.to_string())
        );
        if !pids.is_empty() {
            self.actions.push(Action::Signal {
                pids,
                signal: self.policy.signal_on_hup,
            });
        }
        // The status file first: a `--restart` reads it once the failure is noted.
        self.update_status();
        self.refill_slots();
        self.finish_reload(generation, ReloadResult::RolledBack(outcome.clone()), now);
        self.actions.push(Action::RecordFailure {
            generation,
            why: format!("rolled back: {outcome}"),
        });
        self.actions.push(Action::Notify(Notice::RolledBack {
            generation,
            why: outcome,
            serving,
        }));
        if self.restart_pending {
            info!("received HUP during the bake, spawning a new worker");
            self.reload();
        }
    }
}

#[cfg(test)]
mod tests;
