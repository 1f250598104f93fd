//! The supervisor handed from one program image to the next (an upgrade in place): every field
//! as a plain value, times as offsets from the moment of the hand-over (the monotonic clock goes
//! on across `execve`, but an `Instant` cannot be written down). Serialized by
//! `runtime::upgrade`; a field a newer image added is missing from an older one's state and
//! takes its default, one an older image does not know is ignored.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::generation::Trial;
use super::worker::Leaving;
use super::{Pid, Policy, Supervisor, Tunables, Worker};

/// A moment relative to the hand-over, in microseconds: negative in the past, positive to come.
pub type Offset = i64;

/// The supervisor's state (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub generation: u64,
    pub current: Option<WorkerState>,
    pub trial: Option<TrialState>,
    pub leaving: Vec<LeavingState>,
    pub failures_in_a_row: u32,
    /// Since when the current worker runs, and the failures in a row before it.
    pub probation: Option<(Offset, u32)>,
    pub respawn_at: Option<Offset>,
    pub announced_backoff_us: u64,
    pub restart_pending: bool,
    pub announced_ready: bool,
    pub last_restart: Offset,
    pub written_status: Vec<WorkerState>,
    /// The settings the environment gave at the last spawn.
    pub kill_old_delay_us: u64,
    pub auto_restart_interval_us: Option<u64>,
}

/// A worker: its generation and pid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerState {
    pub generation: u64,
    pub pid: Pid,
}

/// The generation on trial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrialState {
    pub generation: u64,
    pub pid: Option<Pid>,
    pub spawned_at: Option<Offset>,
    pub failed_at: Option<Offset>,
    pub status: Option<String>,
}

/// A worker on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeavingState {
    pub worker: WorkerState,
    pub signal_at: Option<Offset>,
    pub kill_at: Option<Offset>,
    pub note_at: Option<Offset>,
    pub served: bool,
}

fn offset(at: Instant, now: Instant) -> Offset {
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if at >= now {
        micros(at - now)
    } else {
        -micros(now - at)
    }
}

fn instant(offset: Offset, now: Instant) -> Instant {
    let magnitude = Duration::from_micros(offset.unsigned_abs());
    if offset >= 0 {
        now.checked_add(magnitude).unwrap_or(now)
    } else {
        // Before the clock's origin (a state from a long-running image): as old as it can be.
        now.checked_sub(magnitude).unwrap_or(now)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl From<Worker> for WorkerState {
    fn from(w: Worker) -> Self {
        WorkerState {
            generation: w.generation,
            pid: w.pid,
        }
    }
}

impl From<WorkerState> for Worker {
    fn from(w: WorkerState) -> Self {
        Worker {
            generation: w.generation,
            pid: w.pid,
        }
    }
}

impl Supervisor {
    /// The state to hand to the next image, at `now`. Only called between events, when no
    /// action is pending.
    pub fn export(&self, now: Instant) -> State {
        let at = |i: Instant| offset(i, now);
        State {
            generation: self.generation,
            current: self.current.map(Into::into),
            trial: self.trial.as_ref().map(|t| TrialState {
                generation: t.generation,
                pid: t.pid,
                spawned_at: t.spawned_at.map(at),
                failed_at: t.failed_at.map(at),
                status: t.status.clone(),
            }),
            leaving: self
                .leaving
                .iter()
                .map(|l| LeavingState {
                    worker: l.worker.into(),
                    signal_at: l.signal_at.map(at),
                    kill_at: l.kill_at.map(at),
                    note_at: l.note_at.map(at),
                    served: l.served,
                })
                .collect(),
            failures_in_a_row: self.failures_in_a_row,
            probation: self.probation.map(|(since, n)| (at(since), n)),
            respawn_at: self.respawn_at.map(at),
            announced_backoff_us: micros(self.announced_backoff),
            restart_pending: self.restart_pending,
            announced_ready: self.announced_ready,
            last_restart: at(self.last_restart),
            written_status: self.written_status.iter().map(|&w| w.into()).collect(),
            kill_old_delay_us: micros(self.tunables.kill_old_delay),
            auto_restart_interval_us: self.tunables.auto_restart_interval.map(micros),
        }
    }

    /// The supervisor an earlier image exported, going on at `now` with `policy` (which comes
    /// from the same command line, parsed again).
    pub fn import(state: State, policy: Policy, now: Instant) -> Supervisor {
        let at = |o: Offset| instant(o, now);
        let tunables = Tunables {
            kill_old_delay: Duration::from_micros(state.kill_old_delay_us),
            auto_restart_interval: state.auto_restart_interval_us.map(Duration::from_micros),
        };
        let mut supervisor = Supervisor::new(policy, tunables, now);
        supervisor.generation = state.generation;
        supervisor.current = state.current.map(Into::into);
        supervisor.trial = state.trial.map(|t| Trial {
            generation: t.generation,
            pid: t.pid,
            spawned_at: t.spawned_at.map(at),
            failed_at: t.failed_at.map(at),
            status: t.status,
        });
        supervisor.leaving = state
            .leaving
            .into_iter()
            .map(|l| Leaving {
                worker: l.worker.into(),
                signal_at: l.signal_at.map(at),
                kill_at: l.kill_at.map(at),
                note_at: l.note_at.map(at),
                served: l.served,
            })
            .collect();
        supervisor.failures_in_a_row = state.failures_in_a_row;
        supervisor.probation = state.probation.map(|(since, n)| (at(since), n));
        supervisor.respawn_at = state.respawn_at.map(at);
        supervisor.announced_backoff = Duration::from_micros(state.announced_backoff_us);
        supervisor.restart_pending = state.restart_pending;
        supervisor.announced_ready = state.announced_ready;
        supervisor.last_restart = at(state.last_restart);
        supervisor.written_status = state.written_status.into_iter().map(Into::into).collect();
        supervisor
    }

    /// A generation has served: the service manager has had `READY=1` (an upgrade says
    /// `RELOADING=1` only then).
    pub fn announced_ready(&self) -> bool {
        self.announced_ready
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::supervisor::DEFAULT_BACKOFF_AFTER;
    use nix::sys::signal::Signal;

    const SEC: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy {
            interval: SEC,
            signal_on_hup: Signal::SIGTERM,
            signal_on_term: Signal::SIGTERM,
            ready_timeout: None,
            kill_old_timeout: Some(10 * SEC),
            backoff_after: DEFAULT_BACKOFF_AFTER,
            backoff_max: 60 * SEC,
        }
    }

    /// A supervisor in the middle of things: generation 3 serving, 4 on trial, 2 leaving with
    /// its SIGKILL due, an auto-restart interval from the envdir.
    pub(crate) fn busy(now: Instant) -> Supervisor {
        let tunables = Tunables {
            kill_old_delay: 2 * SEC,
            auto_restart_interval: Some(360 * SEC),
        };
        let mut sup = Supervisor::new(policy(), tunables, now - 100 * SEC);
        sup.generation = 4;
        sup.current = Some(Worker {
            generation: 3,
            pid: 1003,
        });
        sup.trial = Some(Trial {
            generation: 4,
            pid: Some(1004),
            spawned_at: Some(now - SEC / 2),
            failed_at: None,
            status: Some("warming up".into()),
        });
        sup.leaving.push(Leaving {
            worker: Worker {
                generation: 2,
                pid: 1002,
            },
            signal_at: None,
            kill_at: Some(now + 7 * SEC),
            note_at: None,
            served: true,
        });
        sup.probation = Some((now - 50 * SEC, 1));
        sup.announced_ready = true;
        sup.last_restart = now - 50 * SEC;
        sup.written_status = sup.live();
        sup
    }

    #[test]
    fn a_handed_over_supervisor_keeps_its_workers_and_deadlines() {
        let now = Instant::now();
        let before = busy(now);
        let state = before.export(now);
        let later = now + 3 * SEC;
        let after = Supervisor::import(state.clone(), policy(), later);
        assert_eq!(after.worker_pids(), before.worker_pids());
        assert_eq!(after.live(), before.live());
        assert_eq!(after.generation, 4);
        assert_eq!(after.tunables, before.tunables);
        // Deadlines move with the moment of the hand-over, to the microsecond.
        let shift = |d: Option<Instant>| d.map(|d| d.duration_since(now));
        let (was, is) = (before.next_deadline(), after.next_deadline());
        assert_eq!(
            shift(was).map(|d| d.as_micros()),
            is.map(|d| d.duration_since(later).as_micros())
        );
        assert_eq!(after.export(later), state);
    }

    #[test]
    fn the_trial_goes_on_being_judged_after_a_hand_over() {
        let now = Instant::now();
        let mut after = Supervisor::import(busy(now).export(now), policy(), now);
        // Spawned half a second ago with a one-second interval: promoted half a second on.
        assert!(after.tick(now + SEC / 4).iter().all(|a| !matches!(
            a,
            crate::supervisor::Action::Notify(crate::supervisor::Notice::Serving { .. })
        )));
        let actions = after.tick(now + SEC);
        assert!(actions.iter().any(|a| matches!(
            a,
            crate::supervisor::Action::Notify(crate::supervisor::Notice::Serving { .. })
        )));
        assert_eq!(after.current.map(|w| w.pid), Some(1004));
    }
}
