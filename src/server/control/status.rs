//! The supervisor's [`Snapshot`] as the control socket's `status` reply and as the one-line
//! summary systemd shows: `Instant`s become wall-clock unix seconds and ages (see
//! `wire::control`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::supervisor::snapshot::{
    GenerationState, ReloadResult, ReloadTrigger, Snapshot, WorkerState,
};
use crate::vocab::time::handover::Moments;
use crate::wire::control::{
    BackoffInfo, FailureInfo, GenerationInfo, ReloadInfo, SocketInfo, Status, Usage, WorkerInfo,
};

/// What does not change while start_server runs.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// When start_server started (monotonic).
    pub started: Instant,
    /// The sockets held for the workers.
    pub sockets: Vec<SocketInfo>,
}

/// [`Fixed`] as an upgrade hands it over (under `started` and `socket_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FactsState {
    /// When start_server started, relative to the hand-over (microseconds, negative).
    pub started: i64,
    /// What `status` says of the sockets.
    pub socket_info: Vec<SocketInfo>,
}

impl Fixed {
    /// For an upgrade in place, at `now`.
    pub fn export(&self, now: Instant) -> FactsState {
        FactsState {
            started: self.started.write(now),
            socket_info: self.sockets.clone(),
        }
    }

    /// As an earlier image exported it, at `now`.
    pub fn adopt(state: FactsState, now: Instant) -> Fixed {
        Fixed {
            started: Instant::read(state.started, now),
            sockets: state.socket_info,
        }
    }
}

/// Converts `Instant`s to wall-clock time at one moment.
struct Clock {
    now: Instant,
    wall: f64,
}

impl Clock {
    fn now() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Clock {
            now: Instant::now(),
            wall,
        }
    }

    fn ago(&self, then: Instant) -> f64 {
        self.now.saturating_duration_since(then).as_secs_f64()
    }

    fn unix(&self, then: Instant) -> f64 {
        self.wall - self.ago(then)
    }

    fn until(&self, later: Instant) -> f64 {
        later.saturating_duration_since(self.now).as_secs_f64()
    }
}

/// The `status` reply.
pub fn status(fixed: &Fixed, snapshot: &Snapshot, log_lines_dropped: u64) -> Status {
    let clock = Clock::now();
    Status {
        pid: std::process::id(),
        version: crate::server::upgrade::version::version(),
        started_unix: clock.unix(fixed.started),
        uptime: clock.ago(fixed.started),
        sockets: fixed.sockets.clone(),
        generations: snapshot
            .generations
            .iter()
            .map(|g| GenerationInfo {
                number: g.number,
                state: generation_state(g.state).into(),
                since_unix: clock.unix(g.since),
                since_ago: clock.ago(g.since),
                bake_left: (snapshot.bake)
                    .filter(|b| b.generation == g.number)
                    .map(|b| clock.until(b.ends)),
                usage: Usage::default(),
            })
            .collect(),
        workers: snapshot
            .workers
            .iter()
            .map(|w| WorkerInfo {
                pid: w.pid,
                slot: w.slot,
                generation: w.generation,
                state: worker_state(w.state).into(),
                status: w.status.clone(),
                restarts: w.restarts,
                predecessors: w.predecessors.iter().map(|s| s.brief()).collect(),
                watchdog_kills: w.watchdog_kills,
                memory_recycles: snapshot.memory_recycles.get(w.slot).copied().unwrap_or(0),
                usage: Usage::default(),
            })
            .collect(),
        last_reload: snapshot.last_reload.as_ref().map(|r| {
            let (trigger, path) = trigger(&r.trigger);
            let (duration, result, reason) = match &r.finished {
                None => (None, "running", None),
                Some((at, ReloadResult::Up)) => (Some(duration(r.started, *at)), "up", None),
                Some((at, ReloadResult::Failed(why))) => {
                    (Some(duration(r.started, *at)), "failed", Some(why.clone()))
                }
                Some((at, ReloadResult::RolledBack(why))) => (
                    Some(duration(r.started, *at)),
                    "rolled_back",
                    Some(why.clone()),
                ),
            };
            ReloadInfo {
                trigger: trigger.into(),
                path,
                generation: r.generation,
                started_unix: clock.unix(r.started),
                started_ago: clock.ago(r.started),
                duration,
                result: result.into(),
                reason,
                attempts: r.attempts,
            }
        }),
        backoff: snapshot.backoff.map(|b| BackoffInfo {
            failures_in_a_row: b.failures_in_a_row,
            next_attempt_in: b.next_attempt.map(|at| clock.until(at)),
        }),
        crash_loop: snapshot.crash_loop,
        stopping: snapshot.stopping,
        workers_signalled_in: snapshot.workers_signalled_at.map(|at| clock.until(at)),
        log_lines_dropped,
        last_failure: snapshot.last_failure.as_ref().map(|f| FailureInfo {
            generation: f.generation,
            reason: f.why.clone(),
            ago: clock.ago(f.at),
        }),
        failures_in_a_row: snapshot.failures_in_a_row,
    }
}

/// systemd's `STATUS=`: the serving generation as start_server has always shown it
/// (`generation 3 (pid 1234) serving`, with its worker's own `STATUS=` after a colon), then
/// what else there is to know in parentheses: `(4/4 workers up, last reload 12s ago ok)`.
pub fn summary(snapshot: &Snapshot, now: Instant) -> String {
    let mut details = Vec::new();
    let mut text = match snapshot
        .generations
        .iter()
        .rev()
        .find(|g| g.state == GenerationState::Up)
    {
        Some(g) => {
            let of_it: Vec<_> = snapshot
                .workers
                .iter()
                .filter(|w| w.generation == g.number)
                .collect();
            let up = of_it.iter().filter(|w| w.state == WorkerState::Up).count();
            if of_it.len() > 1 {
                details.push(format!("{up}/{} workers up", of_it.len()));
            }
            match of_it.iter().min_by_key(|w| w.slot) {
                Some(first) => {
                    let own = first
                        .status
                        .as_ref()
                        .map_or(String::new(), |s| format!(": {s}"));
                    format!("generation {} (pid {}) serving{own}", g.number, first.pid)
                }
                None => format!("generation {} serving", g.number),
            }
        }
        None => "no generation serving".to_string(),
    };
    if snapshot.crash_loop {
        details.push("CRASH LOOP".to_string());
    }
    if let Some(r) = &snapshot.last_reload {
        let ago = now.saturating_duration_since(r.started).as_secs();
        let result = match &r.finished {
            None => "running".to_string(),
            Some((_, ReloadResult::Up)) => "ok".to_string(),
            Some((_, ReloadResult::Failed(why))) => format!("failed: {why}"),
            Some((_, ReloadResult::RolledBack(why))) => format!("rolled back: {why}"),
        };
        details.push(format!("last reload {ago}s ago {result}"));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

fn duration(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

fn generation_state(state: GenerationState) -> &'static str {
    match state {
        GenerationState::Starting => "starting",
        GenerationState::Up => "up",
        GenerationState::Baking => "baking",
        GenerationState::Retiring => "retiring",
    }
}

fn worker_state(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Starting => "starting",
        WorkerState::Up => "up",
        WorkerState::Stopping => "stopping",
    }
}

fn trigger(trigger: &ReloadTrigger) -> (&'static str, Option<String>) {
    match trigger {
        ReloadTrigger::Signal => ("signal", None),
        ReloadTrigger::Control => ("control", None),
        ReloadTrigger::FileChange(path) => ("file_change", Some(path.clone())),
        ReloadTrigger::AutoRestart => ("auto_restart", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::ExitStatus;
    use crate::supervisor::snapshot::{GenerationView, WorkerView};

    #[test]
    fn summary_counts_the_serving_generations_workers() {
        let now = Instant::now();
        let worker = |pid, state| WorkerView {
            pid,
            slot: 0,
            generation: 3,
            state,
            status: None,
            restarts: 0,
            predecessors: vec![ExitStatus(3 << 8)],
            watchdog_kills: 0,
        };
        let snapshot = Snapshot {
            generations: vec![GenerationView {
                number: 3,
                state: GenerationState::Up,
                since: now,
            }],
            workers: vec![
                worker(10, WorkerState::Up),
                worker(11, WorkerState::Starting),
            ],
            last_reload: None,
            last_failure: None,
            failures_in_a_row: 0,
            backoff: None,
            crash_loop: false,
            stopping: false,
            workers_signalled_at: None,
            bake: None,
            memory_recycles: Vec::new(),
        };
        assert_eq!(
            summary(&snapshot, now),
            "generation 3 (pid 10) serving (1/2 workers up)"
        );
        let fixed = Fixed {
            started: now,
            sockets: vec![],
        };
        let status = status(&fixed, &snapshot, 7);
        assert_eq!(status.workers[0].predecessors, vec!["exit 3".to_string()]);
        assert_eq!(status.log_lines_dropped, 7);
        assert_eq!(status.healthy(), Ok(3));
    }
}
