//! `--workers=N`: a generation is N copies of the program, in slots 0..N-1
//! (`SERVER_STARTER_WORKER`). Slot 0 is the generation's own worker, run by the rest of the
//! supervisor exactly as with a single copy (and the one in the status file); slots 1.. are its
//! *copies*, kept here. A generation is up once every slot is; a copy that dies while its
//! generation is starting fails the generation, one that dies while it serves is restarted alone
//! in its slot (after the crash-loop backoff if it died young).

use std::time::Instant;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::vocab::Secs;
use crate::vocab::time::handover;

use super::policy::MIN_UPTIME;
use super::policy::after;
use super::worker::STILL_ALIVE_NOTICE;
use super::{Action, ExitStatus, Leaving, Pid, Supervisor, Worker};

/// A copy of a generation's worker in slot 1 or above (or slot 0 being restarted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Copy {
    pub(super) generation: u64,
    pub(super) slot: usize,
    /// Unset until spawned, and between a death and its restart.
    pub(super) pid: Option<Pid>,
    /// Its spawn was asked for and it has not exited since: it counts against `max_extra`.
    pub(super) requested: bool,
    #[serde(with = "handover")]
    pub(super) spawned_at: Option<Instant>,
    /// Counted as started (`READY=1`, or alive after `interval`).
    pub(super) up: bool,
    /// Its last `STATUS=`.
    pub(super) status: Option<String>,
    /// Restarts of this slot in this generation, and how the workers before it ended.
    pub(super) restarts: u32,
    pub(super) predecessors: Vec<ExitStatus>,
    /// Deaths within [`MIN_UPTIME`] in a row, for the backoff.
    pub(super) failures_in_a_row: u32,
    /// When to restart it after a death (backoff).
    #[serde(with = "handover")]
    pub(super) respawn_at: Option<Instant>,
    /// The worker of its slot it replaces once up (`--worker-max-memory`, see `recycle`).
    pub(super) replaces: Option<Pid>,
}

impl Copy {
    /// This copy's process as a worker of a served generation on its way out, with those
    /// deadlines; `None` while it has no process.
    fn leaving(
        &self,
        signal_at: Option<Instant>,
        kill_at: Option<Instant>,
        note_at: Option<Instant>,
    ) -> Option<Leaving> {
        Some(Leaving {
            worker: Worker {
                generation: self.generation,
                pid: self.pid?,
            },
            slot: self.slot,
            signal_at,
            kill_at,
            note_at,
            served: true,
        })
    }
}

impl Supervisor {
    /// Copies of the program per generation now (`--workers`, [`Supervisor::set_workers`]).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Copies of a new generation: slots 1..N, spawned now, or one by one by
    /// [`Supervisor::roll`] in a rolling reload.
    pub(super) fn begin_copies(&mut self, generation: u64, rolling: bool) {
        for slot in 1..self.slots {
            self.add_copy(generation, slot, !rolling);
        }
    }

    pub(super) fn add_copy(&mut self, generation: u64, slot: usize, spawn: bool) {
        self.copies.push(Copy {
            generation,
            slot,
            pid: None,
            requested: spawn,
            spawned_at: None,
            up: false,
            status: None,
            restarts: 0,
            predecessors: Vec::new(),
            failures_in_a_row: 0,
            respawn_at: None,
            replaces: None,
        });
        if spawn {
            self.actions.push(Action::SpawnCopy { generation, slot });
        }
    }

    /// The outcome of an [`Action::SpawnCopy`], as [`Supervisor::spawned`]'s.
    pub fn spawned_copy<E: std::fmt::Display>(
        &mut self,
        generation: u64,
        slot: usize,
        tunables: super::Tunables,
        result: Result<Pid, E>,
        now: Instant,
    ) -> Vec<Action> {
        self.tunables = tunables;
        if result.is_ok() {
            self.tally.worker_starts += 1;
        }
        let Some(index) = self
            .copies
            .iter()
            .position(|c| c.generation == generation && c.slot == slot && c.pid.is_none())
        else {
            // Its generation failed or left meanwhile: the new process must not linger.
            if let Ok(pid) = result {
                self.retire_pids(&[(generation, slot, pid)], now, false);
            }
            return self.take_actions();
        };
        match result {
            Ok(pid) if slot == 0 && self.copies[index].replaces.is_none() => {
                info!(
                    generation,
                    worker_pid = pid,
                    "starting worker {pid} in slot 0"
                );
                self.copies.remove(index);
                self.watch(pid, now);
                self.readopt_slot_zero(generation, pid, now);
            }
            Ok(pid) => {
                info!(
                    generation,
                    worker_pid = pid,
                    "starting worker {pid} in slot {slot}"
                );
                let copy = &mut self.copies[index];
                copy.pid = Some(pid);
                copy.spawned_at = Some(now);
                self.watch(pid, now);
            }
            Err(why) => {
                warn!(generation, "failed to start a worker in slot {slot}: {why}");
                self.copies[index].requested = false;
                self.copy_failed(index, format!("slot {slot}: {why}"), now);
            }
        }
        self.take_actions()
    }

    /// Whether every copy of `generation` is up.
    pub(super) fn copies_up(&self, generation: u64) -> bool {
        self.copies
            .iter()
            .filter(|c| c.generation == generation)
            .all(|c| c.up)
    }

    /// `READY=1` or `STATUS=` from a copy; returns whether `pid` was one.
    pub(super) fn copy_notified(
        &mut self,
        pid: Pid,
        ready: bool,
        status: Option<&str>,
        now: Instant,
    ) -> bool {
        let Some(copy) = self.copies.iter_mut().find(|c| c.pid == Some(pid)) else {
            return false;
        };
        if let Some(status) = status {
            copy.status = Some(status.to_string());
        }
        if ready && !copy.up && !self.stopping {
            copy.up = true;
            let (generation, slot) = (copy.generation, copy.slot);
            info!(
                generation,
                worker_pid = pid,
                "worker {pid} in slot {slot} is ready (READY=1)"
            );
            self.copy_up(generation, slot, now);
            self.promote_if_all_up(now);
        }
        true
    }

    /// The next moment a copy is judged or restarted.
    pub(super) fn copies_deadline(&self) -> Option<Instant> {
        let judge = self.policy.ready_timeout.unwrap_or(self.policy.interval);
        self.copies
            .iter()
            .filter_map(|c| match (c.pid, c.up) {
                (Some(_), false) => c.spawned_at.map(|at| at + judge),
                (None, _) => c.respawn_at,
                _ => None,
            })
            .min()
    }

    /// Copies alive `interval` after their spawn are up (with `ready_timeout`, one silent that
    /// long failed); copies whose backoff is over are restarted.
    pub(super) fn judge_copies(&mut self, now: Instant) {
        let judge = self.policy.ready_timeout.unwrap_or(self.policy.interval);
        let mut failed = None;
        let mut up = Vec::new();
        for (index, copy) in self.copies.iter_mut().enumerate() {
            if copy.pid.is_none() {
                if copy.respawn_at.is_some_and(|at| now >= at) {
                    copy.respawn_at = None;
                    copy.requested = true;
                    self.actions.push(Action::SpawnCopy {
                        generation: copy.generation,
                        slot: copy.slot,
                    });
                }
                continue;
            }
            if copy.up || copy.spawned_at.is_none_or(|at| now < at + judge) {
                continue;
            }
            if self.policy.ready_timeout.is_some() {
                failed.get_or_insert(index);
            } else {
                copy.up = true;
                up.push((copy.generation, copy.slot));
            }
        }
        for (generation, slot) in up {
            self.note_interval_fallback(generation);
            self.copy_up(generation, slot, now);
        }
        if let Some(index) = failed {
            let slot = self.copies[index].slot;
            let limit = Secs(judge);
            let (to_do, not_done) = self.ready_words();
            warn!("worker in slot {slot} did not {to_do} within {limit}");
            let why = format!("slot {slot}: {not_done} within {limit}");
            self.copy_failed(index, why, now);
        }
        self.promote_if_all_up(now);
    }

    /// A copy could not start or gave up: its generation failed if it was starting; a serving
    /// generation's slot is tried again after the backoff.
    fn copy_failed(&mut self, index: usize, why: String, now: Instant) {
        let generation = self.copies[index].generation;
        if self.replacement_failed(index, false, now) {
        } else if self.is_trial(generation) {
            self.trial_failed(why, now);
            self.stop_trial_workers(now);
        } else if let Some(pid) = self.copies[index].pid.take() {
            self.copies[index].up = false;
            self.copies[index].requested = false;
            self.retire_pids(&[(generation, self.copies[index].slot, pid)], now, false);
            self.schedule_copy_restart(index, now, true);
        } else {
            self.schedule_copy_restart(index, now, true);
        }
    }

    pub(super) fn is_trial(&self, generation: u64) -> bool {
        self.trial
            .as_ref()
            .is_some_and(|t| t.generation == generation && t.failed_at.is_none())
    }

    /// A trial failed by one of its copies: its own worker is stopped too (`trial_failed`
    /// stopped the other copies).
    fn stop_trial_workers(&mut self, now: Instant) {
        if let Some((generation, Some(pid))) = self.trial.as_ref().map(|t| (t.generation, t.pid)) {
            self.discard(generation, pid, now);
        }
    }

    /// Stops and forgets the copies of a failed generation.
    pub(super) fn discard_copies_of(&mut self, generation: u64, now: Instant) {
        let running: Vec<(u64, usize, Pid)> = self
            .copies
            .iter()
            .filter(|c| c.generation == generation)
            .filter_map(|c| c.pid.map(|pid| (generation, c.slot, pid)))
            .collect();
        self.copies.retain(|c| c.generation != generation);
        self.retire_pids(&running, now, false);
    }

    /// Signals workers leaving their slot: `signal_on_hup` for those that served (a surplus
    /// slot), with the retiring deadlines; SIGTERM for those that did not (a failed start), with
    /// the failed-trial SIGKILL deadline.
    pub(super) fn retire_pids(
        &mut self,
        workers: &[(u64, usize, Pid)],
        now: Instant,
        served: bool,
    ) {
        if workers.is_empty() {
            return;
        }
        let (kill_at, note_at, signal) = if served {
            let kill_at = self.policy.kill_old_timeout.map(|t| now + t);
            let note_at = kill_at.is_none().then_some(now + STILL_ALIVE_NOTICE);
            (kill_at, note_at, self.policy.signal_on_hup)
        } else {
            let delay = self
                .policy
                .kill_old_timeout
                .unwrap_or(super::worker::FAILED_TRIAL_KILL_DELAY);
            (Some(now + delay), None, Signal::SIGTERM)
        };
        for &(generation, slot, pid) in workers {
            self.leaving.push(Leaving {
                worker: Worker { generation, pid },
                slot,
                signal_at: None,
                kill_at,
                note_at,
                served,
            });
        }
        self.actions.push(Action::Signal {
            pids: workers.iter().map(|w| w.2).collect(),
            signal,
        });
    }

    /// A copy's process exited: the generation fails if it was starting; otherwise the slot
    /// is restarted. Returns whether `pid` was a copy.
    pub(super) fn copy_exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> bool {
        let Some(index) = self.copies.iter().position(|c| c.pid == Some(pid)) else {
            return false;
        };
        let (generation, slot) = (self.copies[index].generation, self.copies[index].slot);
        if self.replacement_failed(index, true, now) || self.replaced_one_exited(index) {
            return true;
        }
        if self.is_trial(generation) {
            warn!(
                generation,
                worker_pid = pid,
                "worker {pid} in slot {slot} seems to have failed to start, exit status:{status}"
            );
            self.copies[index].pid = None;
            self.trial_failed(format!("slot {slot}: exit status:{status}"), now);
            self.stop_trial_workers(now);
            return true;
        }
        let copy = &mut self.copies[index];
        copy.requested = false;
        let young = copy
            .spawned_at
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_UPTIME);
        copy.pid = None;
        copy.up = false;
        remember_exit(&mut copy.predecessors, status);
        warn!(
            generation,
            worker_pid = pid,
            "worker {pid} in slot {slot} died unexpectedly with status:{status}, restarting it"
        );
        self.schedule_copy_restart(index, now, young);
        true
    }

    /// Restarts the copy at `index` in its slot: at once, or after the backoff if it failed.
    fn schedule_copy_restart(&mut self, index: usize, now: Instant, failed: bool) {
        let copy = &mut self.copies[index];
        copy.restarts += 1;
        copy.failures_in_a_row = if failed {
            copy.failures_in_a_row + 1
        } else {
            0
        };
        let failures = copy.failures_in_a_row;
        let delay = self.backoff_for(failures);
        let copy = &mut self.copies[index];
        if delay.is_zero() {
            copy.requested = true;
            self.actions.push(Action::SpawnCopy {
                generation: copy.generation,
                slot: copy.slot,
            });
        } else {
            info!(
                "slot {}: {failures} failed starts in a row, restarting in {}",
                copy.slot,
                Secs(delay)
            );
            copy.respawn_at = Some(now + delay);
        }
    }

    /// Promotes the trial once its own worker and every copy are up.
    pub(super) fn promote_if_all_up(&mut self, now: Instant) {
        let Some(trial) = self.trial.as_ref() else {
            return;
        };
        let (Some(pid), true) = (trial.pid, trial.leader_up) else {
            return;
        };
        if trial.failed_at.is_some() || !self.copies_up(trial.generation) {
            return;
        }
        let generation = trial.generation;
        if self.bakes_first(generation, now) {
            return;
        }
        let status = self.trial.take().and_then(|t| t.status);
        self.promote(generation, pid, status, now);
    }

    /// Once a generation is promoted: the copies of the ones before it leave with it.
    pub(super) fn copies_of_old_generations_leave(&mut self, current: u64, signal_at: Instant) {
        let (old, kept): (Vec<Copy>, Vec<Copy>) = std::mem::take(&mut self.copies)
            .into_iter()
            .partition(|c| c.generation < current);
        self.copies = kept;
        self.leaving.extend(
            old.iter()
                .filter_map(|copy| copy.leaving(Some(signal_at), None, None)),
        );
    }

    /// Shutdown: every copy leaves with the shutdown's deadlines.
    pub(super) fn copies_leave(&mut self, kill_at: Option<Instant>, note_at: Option<Instant>) {
        let copies = std::mem::take(&mut self.copies);
        self.leaving.extend(
            copies
                .iter()
                .filter_map(|copy| copy.leaving(None, kill_at, note_at)),
        );
    }

    /// Every copy's process, with its generation.
    pub(super) fn copy_workers(&self) -> impl Iterator<Item = Worker> + '_ {
        self.copies.iter().filter_map(|c| {
            c.pid.map(|pid| Worker {
                generation: c.generation,
                pid,
            })
        })
    }

    /// Changes the number of copies of the program in each generation at run time, without
    /// a reload: new slots are spawned in the serving (and starting) generation, surplus slots
    /// get `signal_on_hup`. `n` is at least 1.
    pub fn set_workers(&mut self, n: usize, now: Instant) -> Vec<Action> {
        let n = n.max(1);
        if self.stopping || n == self.slots {
            self.slots = n;
            return self.take_actions();
        }
        info!("number of workers per generation: {} -> {n}", self.slots);
        let generations: Vec<u64> = self
            .current
            .iter()
            .map(|w| w.generation)
            .chain(
                self.trial
                    .as_ref()
                    .filter(|t| t.failed_at.is_none())
                    .map(|t| t.generation),
            )
            .collect();
        if n > self.slots {
            for generation in generations {
                for slot in self.slots..n {
                    self.add_copy(generation, slot, true);
                }
            }
        } else {
            let (surplus, kept): (Vec<Copy>, Vec<Copy>) = std::mem::take(&mut self.copies)
                .into_iter()
                .partition(|c| c.slot >= n);
            self.copies = kept;
            let running: Vec<(u64, usize, Pid)> = surplus
                .iter()
                .filter_map(|c| c.pid.map(|pid| (c.generation, c.slot, pid)))
                .collect();
            self.retire_pids(&running, now, true);
        }
        self.slots = n;
        self.promote_if_all_up(now);
        self.take_actions()
    }
}

impl Supervisor {
    /// The serving generation's own worker (slot 0) died while its copies serve: it is
    /// restarted alone, at once or after `delay` (it died young), as a copy until it runs.
    pub(super) fn restart_slot_zero(
        &mut self,
        generation: u64,
        pid: Pid,
        status: ExitStatus,
        delay: std::time::Duration,
        now: Instant,
    ) {
        warn!(
            generation,
            worker_pid = pid,
            "worker {pid} in slot 0 died unexpectedly with status:{status}, restarting it{}",
            after(delay)
        );
        self.slot_zero_history.0 += 1;
        remember_exit(&mut self.slot_zero_history.1, status);
        self.copies.push(Copy {
            generation,
            slot: 0,
            pid: None,
            requested: delay.is_zero(),
            spawned_at: None,
            up: false,
            status: None,
            restarts: self.slot_zero_history.0,
            predecessors: self.slot_zero_history.1.clone(),
            failures_in_a_row: 0,
            respawn_at: (!delay.is_zero()).then_some(now + delay),
            replaces: None,
        });
        if delay.is_zero() {
            self.actions.push(Action::SpawnCopy {
                generation,
                slot: 0,
            });
        }
    }

    /// Slot 0's new worker runs: it is the serving generation's own worker again, on
    /// probation like a promoted one.
    fn readopt_slot_zero(&mut self, generation: u64, pid: Pid, now: Instant) {
        self.current = Some(Worker { generation, pid });
        self.current_status = None;
        self.probation = Some((now, self.failures_in_a_row));
        self.failures_in_a_row = 0;
        self.update_status();
    }
}

/// How many exit statuses of a slot's former workers are kept (`restarts` counts them all): a
/// slot that crashes for months must not make every status reply longer.
pub(super) const PREDECESSORS_KEPT: usize = 8;

/// Adds `status` to a slot's history, dropping the oldest beyond [`PREDECESSORS_KEPT`].
fn remember_exit(history: &mut Vec<ExitStatus>, status: ExitStatus) {
    if history.len() >= PREDECESSORS_KEPT {
        history.remove(0);
    }
    history.push(status);
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn a_slots_exit_history_keeps_the_last_few() {
        let mut history = Vec::new();
        for raw in 0..100 {
            remember_exit(&mut history, ExitStatus(raw));
        }
        let kept: Vec<i32> = history.iter().map(|s| s.0).collect();
        assert_eq!(kept, (92..100).collect::<Vec<_>>());
    }
}
