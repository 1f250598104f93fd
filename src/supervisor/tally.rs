//! What the supervisor counts of its own doings since start_server started: reloads and how they
//! ended, how long the good ones took, workers started and how each ended, crash loops, workers
//! replaced for their memory. Part of the supervisor's state, so an upgrade in place hands the
//! counts over with the rest of it; the metrics show them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Pid, ReloadResult, Supervisor};
use crate::vocab::histogram::Histogram;

/// The buckets of the reload durations, seconds: a worker that says `READY=1` reloads in
/// milliseconds, one judged by `--interval` in about a second, a slow one in tens.
pub const RELOAD_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The counts (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Reloads whose new generation came up.
    pub reloads_ok: u64,
    /// Reloads whose new generation failed to start.
    pub reloads_failed: u64,
    /// Reloads whose new generation came up, then was rolled back.
    pub reloads_rolled_back: u64,
    /// How long the reloads that came up took, from the request to the new generation serving.
    pub reload_seconds: Histogram,
    /// Worker processes started.
    pub worker_starts: u64,
    /// Worker processes that exited, by why.
    pub exits: Exits,
    /// Crash loops declared (episodes, not failures).
    pub crash_loops: u64,
    /// Workers replaced for going past `--worker-max-memory`, by slot.
    pub memory_recycles: Vec<u64>,
}

/// Worker exits by why, as `server_starter_worker_exits_total{reason}` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Exits {
    /// Replaced (a reload, a surplus slot, a memory recycle) and gone after its signal.
    pub retired: u64,
    /// Stopped with start_server.
    pub stopped: u64,
    /// Gone before it was up, or stopped for failing its start.
    pub failed_start: u64,
    /// Died while it served.
    pub died: u64,
}

impl Exits {
    /// Each reason's label and count.
    pub fn by_reason(&self) -> [(&'static str, u64); 4] {
        [
            ("retired", self.retired),
            ("stopped", self.stopped),
            ("failed_start", self.failed_start),
            ("died", self.died),
        ]
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            reloads_ok: 0,
            reloads_failed: 0,
            reloads_rolled_back: 0,
            reload_seconds: Histogram::new(RELOAD_BUCKETS),
            worker_starts: 0,
            exits: Exits::default(),
            crash_loops: 0,
            memory_recycles: Vec::new(),
        }
    }
}

impl Tally {
    /// A reload ended with `result`, `took` after it was asked for.
    pub(super) fn reload_ended(&mut self, result: &ReloadResult, took: Duration) {
        match result {
            ReloadResult::Up => {
                self.reloads_ok += 1;
                self.reload_seconds.observe(took.as_secs_f64());
            }
            ReloadResult::RolledBack(_) => self.reloads_rolled_back += 1,
            ReloadResult::Failed(_) => self.reloads_failed += 1,
        }
    }

    /// A worker in `slot` was replaced for its memory.
    pub(super) fn recycled(&mut self, slot: usize) {
        if self.memory_recycles.len() <= slot {
            self.memory_recycles.resize(slot + 1, 0);
        }
        self.memory_recycles[slot] += 1;
    }
}

impl Supervisor {
    /// The counts.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Worker `pid` exited: counted by why, from where it was (called before the exit is
    /// handled). A child that is not a worker is not counted.
    pub(super) fn count_exit(&mut self, pid: Pid) {
        let reason = if let Some(leaving) = self.leaving.iter().find(|l| l.worker.pid == pid) {
            if self.stopping {
                Reason::Stopped
            } else if leaving.served {
                Reason::Retired
            } else {
                Reason::FailedStart
            }
        } else if let Some(copy) = self.copies.iter().find(|c| c.pid == Some(pid)) {
            if !copy.up || self.is_trial(copy.generation) {
                Reason::FailedStart
            } else {
                Reason::Died
            }
        } else if self.trial.as_ref().is_some_and(|t| t.pid == Some(pid)) {
            Reason::FailedStart
        } else if self.current.is_some_and(|w| w.pid == pid) {
            Reason::Died
        } else {
            return;
        };
        let exits = &mut self.tally.exits;
        *match reason {
            Reason::Retired => &mut exits.retired,
            Reason::Stopped => &mut exits.stopped,
            Reason::FailedStart => &mut exits.failed_start,
            Reason::Died => &mut exits.died,
        } += 1;
    }
}

enum Reason {
    Retired,
    Stopped,
    FailedStart,
    Died,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Policy;
    use crate::supervisor::tests::{Harness, notify, with_policy};
    use nix::sys::signal::Signal;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn reloads_starts_and_exits_are_counted_and_handed_over() {
        let mut h = Harness::plain();
        h.started();
        h.advance(SEC);
        h.hup();
        h.advance(SEC / 100);
        notify(&mut h, 102, "READY=1"); // generation 2 up 10 ms after the HUP
        h.exit(101, 15); // retired
        h.hup();
        h.exit(103, 1 << 8); // generation 3 fails
        let t = h.sup.tally();
        assert_eq!(
            (t.reloads_ok, t.reloads_failed, t.reloads_rolled_back),
            (1, 1, 0)
        );
        assert_eq!(t.reload_seconds.count(), 1);
        assert!((t.reload_seconds.sum() - 0.01).abs() < 1e-9);
        assert_eq!(t.worker_starts, 3);
        assert_eq!(
            t.exits,
            Exits {
                retired: 1,
                failed_start: 1,
                ..Exits::default()
            }
        );
        h.exit(102, 9); // the serving worker dies
        h.sup.terminate(Signal::SIGTERM, h.now);
        let state = h.sup.export(h.now).unwrap();
        let after = Supervisor::import(state, Policy::default(), h.now).unwrap();
        assert_eq!(after.tally(), h.sup.tally());
        assert_eq!(after.tally().exits.died, 1);

        let mut rolled = Tally::default();
        rolled.reload_ended(
            &ReloadResult::RolledBack("generation 4 failed during the bake".into()),
            SEC,
        );
        assert_eq!((rolled.reloads_rolled_back, rolled.reloads_failed), (1, 0));
    }

    #[test]
    fn a_crash_loop_counts_once_per_episode() {
        let mut h = with_policy(|p| p.interval = Duration::ZERO);
        h.started();
        h.advance(Duration::ZERO);
        for _ in 0..5 {
            let pid = h.sup.current().expect("promoted").pid;
            h.exit(pid, 256);
            let due = h.sup.next_deadline().unwrap_or(h.now);
            h.advance(due - h.now);
            h.advance(Duration::ZERO);
        }
        assert_eq!(h.sup.tally().crash_loops, 1);
        assert_eq!(h.sup.tally().exits.died, 5);
    }

    #[test]
    fn a_state_without_counts_starts_from_zero() {
        let tally: Tally = serde_json::from_str("{}").unwrap();
        assert_eq!(tally, Tally::default());
    }
}
