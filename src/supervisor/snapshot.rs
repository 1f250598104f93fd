//! What the supervisor knows, as plain values for whoever asks (the control socket's `status`,
//! `STATUS=` for systemd): generations, workers, the last reload, backoff in force. Times are
//! `Instant`s; the runtime turns them into wall-clock or monotonic figures.

use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ExitStatus, Pid, Supervisor};
use crate::vocab::time::handover;

/// The whole picture at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every live generation, oldest first.
    pub generations: Vec<GenerationView>,
    /// Every worker process, by generation then slot.
    pub workers: Vec<WorkerView>,
    /// The last reload asked for (HUP, control socket, file change, auto-restart), if any.
    pub last_reload: Option<ReloadView>,
    /// The last start that failed, if any, even of the first generation.
    pub last_failure: Option<FailureView>,
    /// Failed starts in a row now (0 once a generation came up).
    pub failures_in_a_row: u32,
    /// Failed starts in a row and when the next attempt is due, while backing off.
    pub backoff: Option<BackoffView>,
    /// The current generation's workers keep dying before they are up.
    pub crash_loop: bool,
    /// A terminating signal was received: workers are being stopped, or will be at
    /// `workers_signalled_at` (`--shutdown-delay`).
    pub stopping: bool,
    /// When the workers get (or got) their stop signal, once a terminating signal was received.
    pub workers_signalled_at: Option<Instant>,
    /// The bake under way (`--bake`), if any.
    pub bake: Option<BakeView>,
    /// Workers replaced for their memory (`--worker-max-memory`) since start-up, by slot.
    pub memory_recycles: Vec<u64>,
}

/// A generation (or its canary) baking beside the one that serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BakeView {
    /// The generation that bakes.
    pub generation: u64,
    /// With `--max-extra`: the slot of its canary, the one worker that bakes.
    pub canary: Option<usize>,
    /// When the bake ends (and the generation before it retires, or the roll goes on).
    pub ends: Instant,
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationState {
    /// Its workers were spawned and are not all up yet.
    Starting,
    /// It serves: the current generation.
    Up,
    /// It is up (or its canary is) and serves beside the current one until its bake ends
    /// (`--bake`); still on trial.
    Baking,
    /// A newer one took over; its workers were (or are about to be) signalled.
    Retiring,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationView {
    /// Its number (`SERVER_STARTER_GENERATION`).
    pub number: u64,
    /// Where it is.
    pub state: GenerationState,
    /// When it entered that state.
    pub since: Instant,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawned, not yet counted as started.
    Starting,
    /// Counted as started (`READY=1`, or alive after `--interval`).
    Up,
    /// Signalled (retiring, or a failed start being stopped), waited for.
    Stopping,
}

/// One worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// Its pid.
    pub pid: Pid,
    /// Its slot (`SERVER_STARTER_WORKER`), 0 with a single worker per generation.
    pub slot: usize,
    /// Its generation.
    pub generation: u64,
    /// Where it is.
    pub state: WorkerState,
    /// The last `STATUS=` it sent, if any.
    pub status: Option<String>,
    /// How many times its slot was restarted in this generation.
    pub restarts: u32,
    /// Exit statuses of the workers that held its slot before it in this generation (the last
    /// few: `restarts` counts them all).
    pub predecessors: Vec<ExitStatus>,
    /// Workers killed by `--worker-watchdog` since start_server started (all slots).
    pub watchdog_kills: u32,
}

/// What started a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP (or `systemctl reload`).
    Signal,
    /// A request on the control socket.
    Control,
    /// A change to a watched path.
    FileChange(String),
    /// `--enable-auto-restart`.
    AutoRestart,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new generation is up.
    Up,
    /// It failed to start, and why; the old one keeps serving.
    Failed(String),
    /// It failed during its bake and was rolled back (`generation N failed during the bake:
    /// why`); the old one keeps serving.
    RolledBack(String),
}

/// The last reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadView {
    /// What asked for it.
    pub trigger: ReloadTrigger,
    /// The generation it started.
    pub generation: u64,
    /// When it was asked for.
    #[serde(with = "handover")]
    pub started: Instant,
    /// When it ended, and how; `None` while it runs. A failure retried into a generation that
    /// came up ends as up: the reload's outcome is the last word.
    #[serde(with = "handover")]
    pub finished: Option<(Instant, ReloadResult)>,
    /// Generations tried for it so far (failed ones, then the one that came up).
    #[serde(default)]
    pub attempts: u32,
}

/// The last start that failed (of a reload, or of the first generation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureView {
    /// The generation that failed.
    pub generation: u64,
    /// Why.
    pub why: String,
    /// When.
    #[serde(with = "handover")]
    pub at: Instant,
}

/// A reload's trigger and result are handed over as words (`signal`, `control`,
/// `auto-restart`, `file:PATH`; `up`, `failed:WHY`, `rolled-back:WHY`), so that an image meeting
/// one it does not know still reads the rest.
impl ReloadTrigger {
    fn word(&self) -> String {
        match self {
            ReloadTrigger::Signal => "signal".into(),
            ReloadTrigger::Control => "control".into(),
            ReloadTrigger::AutoRestart => "auto-restart".into(),
            ReloadTrigger::FileChange(path) => format!("file:{path}"),
        }
    }

    fn from_word(word: &str) -> ReloadTrigger {
        match word {
            "control" => ReloadTrigger::Control,
            "auto-restart" => ReloadTrigger::AutoRestart,
            _ => match word.strip_prefix("file:") {
                Some(path) => ReloadTrigger::FileChange(path.to_string()),
                None => ReloadTrigger::Signal,
            },
        }
    }
}

impl ReloadResult {
    fn word(&self) -> String {
        match self {
            ReloadResult::Up => "up".into(),
            ReloadResult::Failed(why) => format!("failed:{why}"),
            ReloadResult::RolledBack(why) => format!("rolled-back:{why}"),
        }
    }

    fn from_word(word: &str) -> ReloadResult {
        if let Some(why) = word.strip_prefix("rolled-back:") {
            return ReloadResult::RolledBack(why.to_string());
        }
        match word.strip_prefix("failed:") {
            Some(why) => ReloadResult::Failed(why.to_string()),
            None => ReloadResult::Up,
        }
    }
}

impl Serialize for ReloadTrigger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.word())
    }
}

impl<'de> Deserialize<'de> for ReloadTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ReloadTrigger::from_word(&String::deserialize(d)?))
    }
}

impl Serialize for ReloadResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.word())
    }
}

impl<'de> Deserialize<'de> for ReloadResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ReloadResult::from_word(&String::deserialize(d)?))
    }
}

/// Beside the moment a reload finished, its result is written as it is.
impl handover::Moments for ReloadResult {
    type Written = ReloadResult;
    fn write(&self, _: Instant) -> ReloadResult {
        self.clone()
    }
    fn read(written: ReloadResult, _: Instant) -> ReloadResult {
        written
    }
}

/// Backoff in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffView {
    /// Failed starts in a row.
    pub failures_in_a_row: u32,
    /// When the next attempt is due.
    pub next_attempt: Option<Instant>,
}

impl Supervisor {
    /// The state as plain values (see [`Snapshot`]). Cheap: a copy of what is live.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let _ = now;
        let mut generations = Vec::new();
        let mut workers = Vec::new();
        let serving = self.current.map(|w| w.generation);
        for leaving in &self.leaving {
            let (number, pid) = (leaving.worker.generation, leaving.worker.pid);
            if leaving.served
                && Some(number) != serving
                && !generations
                    .iter()
                    .any(|g: &GenerationView| g.number == number)
            {
                generations.push(GenerationView {
                    number,
                    state: GenerationState::Retiring,
                    since: self.last_restart,
                });
            }
            workers.push(WorkerView {
                pid,
                slot: leaving.slot,
                generation: number,
                state: WorkerState::Stopping,
                status: None,
                restarts: 0,
                predecessors: Vec::new(),
                watchdog_kills: self.watchdog.kills,
            });
        }
        if let Some(current) = self.current {
            generations.push(GenerationView {
                number: current.generation,
                state: GenerationState::Up,
                since: self.last_restart,
            });
            workers.push(WorkerView {
                pid: current.pid,
                slot: 0,
                generation: current.generation,
                state: WorkerState::Up,
                status: self.current_status.clone(),
                restarts: self.slot_zero_history.0,
                predecessors: self.slot_zero_history.1.clone(),
                watchdog_kills: self.watchdog.kills,
            });
        }
        let bake = self.baking();
        if let Some(trial) = self.trial.as_ref().filter(|t| t.failed_at.is_none()) {
            generations.push(GenerationView {
                number: trial.generation,
                state: match bake {
                    Some(_) => GenerationState::Baking,
                    None => GenerationState::Starting,
                },
                since: bake.map_or(trial.spawned_at.unwrap_or(self.last_restart), |b| b.since),
            });
            if let Some(pid) = trial.pid {
                workers.push(WorkerView {
                    pid,
                    slot: 0,
                    generation: trial.generation,
                    state: if bake.is_some() {
                        WorkerState::Up
                    } else {
                        WorkerState::Starting
                    },
                    status: trial.status.clone(),
                    restarts: 0,
                    predecessors: Vec::new(),
                    watchdog_kills: self.watchdog.kills,
                });
            }
        }
        for copy in &self.copies {
            if let Some(pid) = copy.pid {
                workers.push(WorkerView {
                    pid,
                    slot: copy.slot,
                    generation: copy.generation,
                    state: if copy.up {
                        WorkerState::Up
                    } else {
                        WorkerState::Starting
                    },
                    status: copy.status.clone(),
                    restarts: copy.restarts,
                    predecessors: copy.predecessors.clone(),
                    watchdog_kills: self.watchdog.kills,
                });
            }
        }
        generations.sort_by_key(|g| g.number);
        workers.sort_by_key(|w| (w.generation, w.slot, w.pid));
        Snapshot {
            generations,
            workers,
            last_reload: self.last_reload.clone(),
            last_failure: self.last_failure.clone(),
            failures_in_a_row: self.failures_in_a_row,
            backoff: (self.failures_in_a_row > 0).then(|| BackoffView {
                failures_in_a_row: self.failures_in_a_row,
                next_attempt: self.next_deadline(),
            }),
            crash_loop: self.crash_loop.is_some(),
            stopping: self.shutting_down(),
            workers_signalled_at: self
                .stop_due
                .map(|(due, _)| due)
                .or(self.workers_signalled_at),
            bake: bake.map(|b| BakeView {
                generation: b.generation,
                canary: b.canary,
                ends: b.until,
            }),
            memory_recycles: self.tally.memory_recycles.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::tests::Harness;

    #[test]
    fn a_reload_in_progress_shows_both_generations() {
        let mut h = Harness::plain();
        h.started();
        h.advance(std::time::Duration::from_secs(1));
        h.hup();
        let snapshot = h.sup.snapshot(h.now);
        let states: Vec<(u64, GenerationState)> = snapshot
            .generations
            .iter()
            .map(|g| (g.number, g.state))
            .collect();
        assert_eq!(
            states,
            vec![(1, GenerationState::Up), (2, GenerationState::Starting)]
        );
        let workers: Vec<(Pid, WorkerState)> =
            snapshot.workers.iter().map(|w| (w.pid, w.state)).collect();
        assert_eq!(
            workers,
            vec![(101, WorkerState::Up), (102, WorkerState::Starting)]
        );
        assert!(!snapshot.stopping && snapshot.backoff.is_none());
    }
}
