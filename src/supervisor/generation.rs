//! Generations and their life cycle: a new one begins on trial, is promoted to current (the one
//! before it starts leaving) or fails (and is retried later).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::policy::after;
use super::snapshot::FailureView;
use super::{
    Action, ExitStatus, Leaving, Notice, Pid, ReloadResult, ReloadTrigger, ReloadView, Supervisor,
    Worker, join,
};
use crate::vocab::Secs;
use crate::vocab::signal::short_name;
use crate::vocab::time::handover;

/// The generation on trial: spawned, not yet up (or failed, waiting to be retried).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Trial {
    pub(super) generation: u64,
    pub(super) pid: Option<Pid>,
    /// Unset until the spawn is reported.
    #[serde(with = "handover")]
    pub(super) spawned_at: Option<Instant>,
    /// When the failure became known; the next attempt follows after the interval and backoff.
    #[serde(with = "handover")]
    pub(super) failed_at: Option<Instant>,
    /// The worker's last `STATUS=` while on trial, shown once it serves.
    pub(super) status: Option<String>,
    /// Its own worker (slot 0) is up; the generation is promoted once its copies are too.
    pub(super) leader_up: bool,
    /// A rolling reload spawns its own worker last (see `roll`): not asked for yet.
    pub(super) deferred: bool,
}

impl Supervisor {
    /// Starts a reload's generation, telling the service manager first: `RELOADING=1` only once
    /// it has seen `READY=1`, as the notify-reload protocol expects (before that, the service is
    /// still starting, and the first generation to serve sends the first `READY=1`).
    pub(super) fn reload(&mut self) {
        if self.announced_ready {
            self.actions.push(Action::Notify(Notice::Reloading));
        }
        self.begin_generation();
    }

    /// Records a reload asked for at `now`: it concerns the next generation to begin.
    pub(super) fn note_reload(&mut self, trigger: ReloadTrigger, now: Instant) {
        self.last_reload = Some(ReloadView {
            trigger,
            generation: self.generation + 1,
            started: now,
            finished: None,
            attempts: 0,
        });
    }

    /// Counts `generation`'s outcome for the last reload, if it is (or follows) its own: its
    /// first outcome ends it; a failure retried into a generation that comes up ends it as up
    /// (the reload's outcome is the last word), a failure retried into another failure keeps
    /// the newest reason.
    pub(super) fn finish_reload(&mut self, generation: u64, result: ReloadResult, now: Instant) {
        let Some(reload) = self
            .last_reload
            .as_mut()
            .filter(|r| generation >= r.generation)
        else {
            return;
        };
        let open = match &reload.finished {
            None => true,
            Some((_, ReloadResult::Failed(_))) => true,
            // A rollback is not retried: it is the reload's last word.
            Some((_, ReloadResult::Up | ReloadResult::RolledBack(_))) => false,
        };
        if reload.finished.is_none() {
            // Counted once, by its first outcome (what `--reload` answered): a counter never
            // goes back when a retry comes up later.
            let took = now.saturating_duration_since(reload.started);
            self.tally.reload_ended(&result, took);
        }
        if open {
            reload.attempts = reload.attempts.saturating_add(1);
            reload.finished = Some((now, result));
        }
    }

    pub(super) fn trial_failed(&mut self, why: String, now: Instant) {
        let Some(trial) = self.trial.as_mut() else {
            return;
        };
        trial.failed_at = Some(now);
        let generation = trial.generation;
        self.failures_in_a_row += 1;
        self.last_failure = Some(FailureView {
            generation,
            why: why.clone(),
            at: now,
        });
        self.finish_reload(generation, ReloadResult::Failed(why.clone()), now);
        self.discard_copies_of(generation, now);
        self.refill_slots();
        let serving = self.current;
        self.actions.push(Action::RecordFailure {
            generation,
            why: why.clone(),
        });
        self.actions.push(Action::Notify(Notice::StartFailed {
            generation,
            why,
            serving,
        }));
        self.announce_backoff(now);
    }

    pub(super) fn begin_generation(&mut self) {
        self.generation += 1;
        self.restart_pending = false;
        self.respawn_at = None;
        self.trial = Some(Trial {
            generation: self.generation,
            pid: None,
            spawned_at: None,
            failed_at: None,
            status: None,
            leader_up: false,
            deferred: false,
        });
        // With `max_extra`, a reload rolls slot by slot (a first start, or one after the
        // serving worker died, has nothing to roll over).
        if self.policy.max_extra.is_some() && self.current.is_some() {
            if let Some(trial) = self.trial.as_mut() {
                trial.deferred = true;
            }
            self.begin_copies(self.generation, true);
            self.roll();
        } else {
            self.actions.push(Action::Spawn {
                generation: self.generation,
            });
            self.begin_copies(self.generation, false);
        }
    }

    pub(super) fn promote(
        &mut self,
        generation: u64,
        pid: Pid,
        status: Option<String>,
        now: Instant,
    ) {
        self.probation = Some((now, self.failures_in_a_row));
        self.failures_in_a_row = 0;
        self.slot_zero_history = (0, Vec::new());
        self.finish_reload(generation, ReloadResult::Up, now);
        let delay = self.tunables.kill_old_delay;
        self.current_status = status.clone();
        if let Some(previous) = self.current.replace(Worker { generation, pid }) {
            self.leaving.push(Leaving {
                worker: previous,
                slot: 0,
                signal_at: Some(now + delay),
                kill_at: None,
                note_at: None,
                served: true,
            });
        }
        self.copies_of_old_generations_leave(generation, now + delay);
        self.last_restart = now;
        self.announced_ready = true;
        self.actions.push(Action::Notify(Notice::Serving {
            worker: Worker { generation, pid },
            status,
        }));
        let mut waiting: Vec<Pid> = self
            .leaving
            .iter()
            .filter(|r| r.signal_at.is_some())
            .map(|r| r.worker.pid)
            .collect();
        waiting.sort();
        info!(
            generation,
            worker_pid = pid,
            "new worker is now running, sending {} to old workers:{}",
            short_name(self.policy.signal_on_hup),
            if waiting.is_empty() {
                "none".to_string()
            } else {
                join(&waiting)
            }
        );
        if !delay.is_zero() && !waiting.is_empty() {
            info!("sleeping {} before killing old workers", Secs(delay));
        }
        self.update_status();
        self.signal_due_old_workers(now);
        if self.restart_pending {
            info!("received HUP, spawning a new worker");
            self.reload();
        }
    }

    /// The trial's process exited: a failed start, unless it had already failed (and was
    /// stopped).
    pub(super) fn trial_exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        let Some(trial) = self.trial.as_mut() else {
            return;
        };
        let generation = trial.generation;
        trial.pid = None;
        if trial.failed_at.is_none() {
            warn!(
                generation,
                worker_pid = pid,
                "new worker {pid} seems to have failed to start, exit status:{status}"
            );
            self.trial_failed(format!("exit status:{status}"), now);
        }
    }

    /// The serving worker died: replace it, at once or after the crash-loop backoff.
    pub(super) fn current_died(&mut self, pid: Pid, status: ExitStatus, now: Instant) {
        let Some(worker) = self.current else {
            return;
        };
        self.current = None;
        self.current_status = None;
        if self.replacement_takes_slot_zero(pid, now) {
            return;
        }
        let generation = worker.generation;
        let delay = self.died_young(now);
        if self.copies.iter().any(|c| c.generation == generation) {
            // Its copies serve on: slot 0 is restarted alone, in its generation.
            self.restart_slot_zero(generation, pid, status, delay, now);
            return;
        }
        if self.takes_over_from_the_dead(pid, status, now) {
            return;
        }
        warn!(
            generation,
            worker_pid = pid,
            "worker {pid} died unexpectedly with status:{status}, restarting{}",
            after(delay)
        );
        if self.trial.is_none() {
            if delay.is_zero() {
                self.begin_generation();
            } else {
                self.respawn_at = Some(now + delay);
            }
        }
    }
}
