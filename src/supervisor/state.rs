//! The supervisor handed from one program image to the next (an upgrade in place): every field
//! as a plain value, times as offsets from the moment of the hand-over (the monotonic clock goes
//! on across `execve`, but an `Instant` cannot be written down). Serialized by
//! `runtime::upgrade`; a field a newer image added is missing from an older one's state and
//! takes its default, one an older image does not know is ignored.
//!
//! Not handed over: a stop under way (start_server refuses to upgrade while stopping).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::generation::Trial;
use super::slots::Copy;
use super::worker::Leaving;
use super::{
    ExitStatus, Pid, Policy, ReloadResult, ReloadTrigger, ReloadView, Supervisor, Tunables, Worker,
};

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
    /// Copies of the program per generation (0 in a state from before `--workers`: the
    /// command line's).
    pub slots: usize,
    pub copies: Vec<CopyState>,
    /// Restarts of the serving generation's slot 0, and the raw statuses its workers ended with.
    pub slot_zero_history: (u32, Vec<i32>),
    pub failures_in_a_row: u32,
    /// Since when the current worker runs, and the failures in a row before it.
    pub probation: Option<(Offset, u32)>,
    pub respawn_at: Option<Offset>,
    pub crash_loop: Option<Offset>,
    pub announced_backoff_us: u64,
    pub restart_pending: bool,
    pub announced_ready: bool,
    pub last_reload: Option<ReloadState>,
    pub last_restart: Offset,
    /// `--worker-watchdog`: each watched worker's last sign of life, the silent ones' SIGKILL
    /// deadlines, and the count of workers killed.
    pub watchdog_seen: Vec<(Pid, Offset)>,
    pub watchdog_hung: Vec<(Pid, Offset)>,
    pub watchdog_kills: u32,
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
    pub leader_up: bool,
    pub deferred: bool,
}

/// A worker on its way out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeavingState {
    pub worker: WorkerState,
    pub slot: usize,
    pub signal_at: Option<Offset>,
    pub kill_at: Option<Offset>,
    pub note_at: Option<Offset>,
    pub served: bool,
}

/// A worker in slot 1 or above (or slot 0 being restarted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CopyState {
    pub generation: u64,
    pub slot: usize,
    pub pid: Option<Pid>,
    pub requested: bool,
    pub spawned_at: Option<Offset>,
    pub up: bool,
    pub status: Option<String>,
    pub restarts: u32,
    pub predecessors: Vec<i32>,
    pub failures_in_a_row: u32,
    pub respawn_at: Option<Offset>,
}

/// The last reload. Its trigger and result are words (`signal`, `control`, `auto-restart`,
/// `file:PATH`; `up`, `failed:WHY`), so that a reader meeting one it does not know still reads
/// the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadState {
    pub trigger: String,
    pub generation: u64,
    pub started: Offset,
    pub finished: Option<(Offset, String)>,
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

fn trigger_word(trigger: &ReloadTrigger) -> String {
    match trigger {
        ReloadTrigger::Signal => "signal".into(),
        ReloadTrigger::Control => "control".into(),
        ReloadTrigger::AutoRestart => "auto-restart".into(),
        ReloadTrigger::FileChange(path) => format!("file:{path}"),
    }
}

fn trigger_from(word: &str) -> ReloadTrigger {
    match word {
        "control" => ReloadTrigger::Control,
        "auto-restart" => ReloadTrigger::AutoRestart,
        _ => match word.strip_prefix("file:") {
            Some(path) => ReloadTrigger::FileChange(path.to_string()),
            None => ReloadTrigger::Signal,
        },
    }
}

fn result_word(result: &ReloadResult) -> String {
    match result {
        ReloadResult::Up => "up".into(),
        ReloadResult::Failed(why) => format!("failed:{why}"),
    }
}

fn result_from(word: &str) -> ReloadResult {
    match word.strip_prefix("failed:") {
        Some(why) => ReloadResult::Failed(why.to_string()),
        None => ReloadResult::Up,
    }
}

impl Supervisor {
    /// The state to hand to the next image, at `now`. Only called between events, when no
    /// action is pending, and never while stopping.
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
                leader_up: t.leader_up,
                deferred: t.deferred,
            }),
            leaving: self
                .leaving
                .iter()
                .map(|l| LeavingState {
                    worker: l.worker.into(),
                    slot: l.slot,
                    signal_at: l.signal_at.map(at),
                    kill_at: l.kill_at.map(at),
                    note_at: l.note_at.map(at),
                    served: l.served,
                })
                .collect(),
            slots: self.slots,
            copies: self
                .copies
                .iter()
                .map(|c| CopyState {
                    generation: c.generation,
                    slot: c.slot,
                    pid: c.pid,
                    requested: c.requested,
                    spawned_at: c.spawned_at.map(at),
                    up: c.up,
                    status: c.status.clone(),
                    restarts: c.restarts,
                    predecessors: c.predecessors.iter().map(|s| s.0).collect(),
                    failures_in_a_row: c.failures_in_a_row,
                    respawn_at: c.respawn_at.map(at),
                })
                .collect(),
            slot_zero_history: (
                self.slot_zero_history.0,
                self.slot_zero_history.1.iter().map(|s| s.0).collect(),
            ),
            failures_in_a_row: self.failures_in_a_row,
            probation: self.probation.map(|(since, n)| (at(since), n)),
            respawn_at: self.respawn_at.map(at),
            crash_loop: self.crash_loop.map(at),
            announced_backoff_us: micros(self.announced_backoff),
            restart_pending: self.restart_pending,
            announced_ready: self.announced_ready,
            last_reload: self.last_reload.as_ref().map(|r| ReloadState {
                trigger: trigger_word(&r.trigger),
                generation: r.generation,
                started: at(r.started),
                finished: r
                    .finished
                    .as_ref()
                    .map(|(when, result)| (at(*when), result_word(result))),
            }),
            last_restart: at(self.last_restart),
            watchdog_seen: self
                .watchdog
                .seen
                .iter()
                .map(|&(p, i)| (p, at(i)))
                .collect(),
            watchdog_hung: self
                .watchdog
                .hung
                .iter()
                .map(|&(p, i)| (p, at(i)))
                .collect(),
            watchdog_kills: self.watchdog.kills,
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
            leader_up: t.leader_up,
            deferred: t.deferred,
        });
        supervisor.leaving = state
            .leaving
            .into_iter()
            .map(|l| Leaving {
                worker: l.worker.into(),
                slot: l.slot,
                signal_at: l.signal_at.map(at),
                kill_at: l.kill_at.map(at),
                note_at: l.note_at.map(at),
                served: l.served,
            })
            .collect();
        if state.slots > 0 {
            supervisor.slots = state.slots;
        }
        supervisor.copies = state
            .copies
            .into_iter()
            .map(|c| Copy {
                generation: c.generation,
                slot: c.slot,
                pid: c.pid,
                requested: c.requested,
                spawned_at: c.spawned_at.map(at),
                up: c.up,
                status: c.status,
                restarts: c.restarts,
                predecessors: c.predecessors.into_iter().map(ExitStatus).collect(),
                failures_in_a_row: c.failures_in_a_row,
                respawn_at: c.respawn_at.map(at),
            })
            .collect();
        supervisor.slot_zero_history = (
            state.slot_zero_history.0,
            state
                .slot_zero_history
                .1
                .into_iter()
                .map(ExitStatus)
                .collect(),
        );
        supervisor.failures_in_a_row = state.failures_in_a_row;
        supervisor.probation = state.probation.map(|(since, n)| (at(since), n));
        supervisor.respawn_at = state.respawn_at.map(at);
        supervisor.crash_loop = state.crash_loop.map(at);
        supervisor.announced_backoff = Duration::from_micros(state.announced_backoff_us);
        supervisor.restart_pending = state.restart_pending;
        supervisor.announced_ready = state.announced_ready;
        supervisor.last_reload = state.last_reload.map(|r| ReloadView {
            trigger: trigger_from(&r.trigger),
            generation: r.generation,
            started: at(r.started),
            finished: r
                .finished
                .map(|(when, result)| (at(when), result_from(&result))),
        });
        supervisor.last_restart = at(state.last_restart);
        supervisor.watchdog.seen = state
            .watchdog_seen
            .into_iter()
            .map(|(p, o)| (p, at(o)))
            .collect();
        supervisor.watchdog.hung = state
            .watchdog_hung
            .into_iter()
            .map(|(p, o)| (p, at(o)))
            .collect();
        supervisor.watchdog.kills = state.watchdog_kills;
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
            shutdown_delay: Duration::ZERO,
            worker_watchdog: Some(10 * SEC),
            workers: 2,
            max_extra: None,
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
            leader_up: false,
            deferred: false,
        });
        sup.leaving.push(Leaving {
            worker: Worker {
                generation: 2,
                pid: 1002,
            },
            slot: 0,
            signal_at: None,
            kill_at: Some(now + 7 * SEC),
            note_at: None,
            served: true,
        });
        // Generation 3's copy in slot 1 serves, generation 4's is starting.
        for (generation, pid, up) in [(3, 2003, true), (4, 2004, false)] {
            sup.copies.push(Copy {
                generation,
                slot: 1,
                pid: Some(pid),
                requested: true,
                spawned_at: Some(now - SEC / 2),
                up,
                status: None,
                restarts: u32::from(up),
                predecessors: if up { vec![ExitStatus(9)] } else { vec![] },
                failures_in_a_row: 0,
                respawn_at: None,
            });
        }
        sup.watchdog.seen = vec![(1003, now - SEC), (2003, now - 2 * SEC)];
        sup.watchdog.kills = 1;
        sup.last_reload = Some(ReloadView {
            trigger: ReloadTrigger::FileChange("/srv/app".into()),
            generation: 4,
            started: now - SEC,
            finished: None,
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
