//! `--worker-max-memory`: a serving worker whose memory went past the limit is replaced without
//! its slot ever being empty. With copies, a new copy starts in its slot of the same generation
//! (within `--max-extra`, one at a time without it) and the old one gets `signal_on_hup` once
//! the new one is up; a generation of one worker is followed by a new generation, as a reload
//! (not recorded as one). The OS layer measures, and says which worker is over the limit
//! ([`Supervisor::over_memory`]); a replacement that fails to start is dropped, the old worker
//! serving on until the next measure.

use std::time::Instant;

use tracing::{info, warn};

use super::slots::Copy;
use super::{Action, Pid, Supervisor, Worker};
use crate::vocab::signal::short_name;

/// `bytes` as MiB with one decimal, for the log.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Supervisor {
    /// Worker `pid` uses `bytes` of memory, above `limit`: replace it, if it serves and is not
    /// being replaced already, and the workers alive leave room for one more.
    pub fn over_memory(&mut self, pid: Pid, bytes: u64, limit: u64, now: Instant) -> Vec<Action> {
        let _ = now;
        let Some(current) = self.current.filter(|_| !self.shutting_down()) else {
            return self.take_actions();
        };
        let generation = current.generation;
        let slot = if current.pid == pid {
            Some(0)
        } else {
            self.copies
                .iter()
                .find(|c| c.pid == Some(pid) && c.generation == generation && c.up)
                .map(|c| c.slot)
        };
        let being_replaced = self.copies.iter().any(|c| c.replaces == Some(pid));
        // A reload under way replaces it anyway.
        let Some(slot) = slot.filter(|_| !being_replaced && self.trial.is_none()) else {
            return self.take_actions();
        };
        let own = self.copies.iter().any(|c| c.generation == generation);
        if self.slots <= 1 && !own {
            if self.respawn_at.is_none() {
                warn!(
                    generation,
                    worker_pid = pid,
                    "worker {pid} uses {}, above --worker-max-memory ({}): replacing it with a \
                     new generation",
                    mib(bytes),
                    mib(limit)
                );
                self.tally.recycled(0);
                self.begin_generation();
            }
            return self.take_actions();
        }
        if self.occupied() >= self.slots + self.policy.max_extra.unwrap_or(1) {
            return self.take_actions();
        }
        warn!(
            generation,
            worker_pid = pid,
            "worker {pid} in slot {slot} uses {}, above --worker-max-memory ({}): starting its \
             replacement",
            mib(bytes),
            mib(limit)
        );
        self.tally.recycled(slot);
        let (restarts, predecessors) = match self.copies.iter().find(|c| c.pid == Some(pid)) {
            Some(old) => (old.restarts, old.predecessors.clone()),
            None => (0, Vec::new()),
        };
        self.copies.push(Copy {
            generation,
            slot,
            requested: true,
            restarts,
            predecessors,
            replaces: Some(pid),
            ..Copy::default()
        });
        self.actions.push(Action::SpawnCopy { generation, slot });
        self.take_actions()
    }

    /// A copy is up: if it replaces a worker of its slot, that worker leaves now (slot 0's new
    /// worker becomes the generation's own).
    pub(super) fn replacement_up(&mut self, generation: u64, slot: usize, now: Instant) {
        let Some(index) = self.copies.iter().position(|c| {
            c.generation == generation && c.slot == slot && c.up && c.replaces.is_some()
        }) else {
            return;
        };
        let (Some(old), Some(new)) = (self.copies[index].replaces.take(), self.copies[index].pid)
        else {
            return;
        };
        info!(
            generation,
            worker_pid = new,
            "worker {new} replaced worker {old} in slot {slot}, sending {} to {old}",
            short_name(self.policy.signal_on_hup)
        );
        if self.current.is_some_and(|w| w.pid == old) {
            let copy = self.copies.remove(index);
            self.current = Some(Worker {
                generation,
                pid: new,
            });
            self.current_status = copy.status;
            self.update_status();
        } else if let Some(old_index) = self.copies.iter().position(|c| c.pid == Some(old)) {
            self.copies.remove(old_index);
        }
        self.retire_pids(&[(generation, slot, old)], now, true);
    }

    /// The copy at `index` is a replacement that could not start, gave up or (`exited`) died
    /// before it was up: it is dropped, the worker it was to replace serves on. Returns whether
    /// it was one.
    pub(super) fn replacement_failed(&mut self, index: usize, exited: bool, now: Instant) -> bool {
        let Some(old) = self.copies[index]
            .replaces
            .filter(|_| !self.copies[index].up)
        else {
            return false;
        };
        let copy = self.copies.remove(index);
        warn!(
            generation = copy.generation,
            "the replacement of worker {old} in slot {} did not start: {old} serves on", copy.slot
        );
        if let Some(pid) = copy.pid.filter(|_| !exited) {
            // Stopped like a failed start: it may still run (no READY=1 in time).
            self.retire_pids(&[(copy.generation, copy.slot, pid)], now, false);
        }
        true
    }

    /// The copy at `index` exited while its replacement was starting: the replacement takes
    /// its slot now. Returns whether it was being replaced.
    pub(super) fn replaced_one_exited(&mut self, index: usize) -> bool {
        let Some(old) = self.copies[index].pid else {
            return false;
        };
        let Some(successor) = self.copies.iter_mut().find(|c| c.replaces == Some(old)) else {
            return false;
        };
        successor.replaces = None;
        self.copies.remove(index);
        true
    }

    /// The serving generation's own worker died while its replacement was starting: the
    /// replacement becomes slot 0's worker (at once if it runs, else once spawned, as a restart
    /// of the slot). Returns whether there was one.
    pub(super) fn replacement_takes_slot_zero(&mut self, died: Pid, now: Instant) -> bool {
        let Some(index) = self.copies.iter().position(|c| c.replaces == Some(died)) else {
            return false;
        };
        warn!(
            worker_pid = died,
            "worker {died} died while its replacement was starting: the replacement takes slot 0"
        );
        self.copies[index].replaces = None;
        if let Some(pid) = self.copies[index].pid {
            let generation = self.copies.remove(index).generation;
            self.current = Some(Worker { generation, pid });
            self.probation = Some((now, self.failures_in_a_row));
            self.update_status();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::snapshot::WorkerState::{Starting, Stopping, Up};
    use crate::supervisor::tests::{Harness, notify, slots, with_policy};
    use nix::sys::signal::Signal;
    use std::time::Duration;

    const SEC: Duration = Duration::from_secs(1);
    const LIMIT: u64 = 100 << 20;

    fn over(h: &mut Harness, pid: Pid) -> Vec<Action> {
        let actions = h.sup.over_memory(pid, 2 * LIMIT, LIMIT, h.now);
        h.run(actions)
    }

    #[test]
    fn a_copy_over_the_limit_is_replaced_in_its_slot_and_signalled_once_the_new_one_is_up() {
        let mut h = with_policy(|p| p.workers = 2);
        h.started();
        h.advance(SEC); // 101 (slot 0), 102 (slot 1) serve
        let actions = over(&mut h, 102);
        assert_eq!(
            actions,
            vec![Action::SpawnCopy {
                generation: 1,
                slot: 1
            }]
        );
        assert!(over(&mut h, 102).is_empty(), "already being replaced");
        assert!(
            over(&mut h, 101).is_empty(),
            "one at a time without --max-extra"
        );
        assert_eq!(
            slots(&h),
            vec![(1, 0, 101, Up), (1, 1, 102, Up), (1, 1, 103, Starting)]
        );
        let actions = notify(&mut h, 103, "READY=1");
        assert_eq!(
            actions,
            vec![Action::Signal {
                pids: vec![102],
                signal: Signal::SIGTERM
            }]
        );
        assert_eq!(
            slots(&h),
            vec![(1, 0, 101, Up), (1, 1, 102, Stopping), (1, 1, 103, Up)]
        );
        h.exit(102, 15);
        assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 103, Up)]);
        assert_eq!(h.sup.tally().memory_recycles, [0, 1]);
        assert_eq!(h.sup.tally().exits.retired, 1);
        assert_eq!(h.sup.snapshot(h.now).memory_recycles, [0, 1]);
        // Now slot 0: its new worker becomes the generation's own, the status file follows.
        over(&mut h, 101);
        h.advance(SEC); // 104 up (no READY=1: the interval)
        assert_eq!(
            h.sup.current(),
            Some(Worker {
                generation: 1,
                pid: 104
            })
        );
        assert_eq!(
            h.sup.live(),
            vec![Worker {
                generation: 1,
                pid: 104
            }]
        );
        assert_eq!(
            slots(&h),
            vec![(1, 0, 101, Stopping), (1, 0, 104, Up), (1, 1, 103, Up)]
        );
        let generations = h.sup.snapshot(h.now).generations;
        assert_eq!(generations.len(), 1, "{generations:?}");
    }

    #[test]
    fn a_replacement_that_fails_is_dropped_and_the_old_worker_serves_on() {
        let mut h = with_policy(|p| {
            p.workers = 2;
            p.max_extra = Some(1);
        });
        h.started();
        h.advance(SEC);
        over(&mut h, 102);
        h.exit(103, 1 << 8);
        assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 102, Up)]);
        assert_eq!(h.sup.tally().exits.failed_start, 1);
        // The next measure tries again; this time the old one dies first: the new one takes
        // the slot, nothing is restarted besides.
        assert_eq!(over(&mut h, 102).len(), 1);
        assert!(h.exit(102, 9).is_empty());
        assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 104, Starting)]);
        h.advance(SEC);
        assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 104, Up)]);
        // Slot 0 dies while its replacement starts: the replacement is its worker at once.
        over(&mut h, 101);
        let actions = h.exit(101, 9);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Spawn { .. } | Action::SpawnCopy { .. })),
            "{actions:?}"
        );
        assert_eq!(
            h.sup.current(),
            Some(Worker {
                generation: 1,
                pid: 105
            })
        );
    }

    #[test]
    fn a_single_worker_over_the_limit_is_followed_by_a_new_generation() {
        let mut h = Harness::plain();
        h.started();
        h.advance(SEC);
        assert_eq!(over(&mut h, 101), vec![Action::Spawn { generation: 2 }]);
        assert!(over(&mut h, 101).is_empty(), "a generation is starting");
        let actions = h.advance(SEC);
        assert!(actions.contains(&Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }));
        assert_eq!(
            h.sup.current(),
            Some(Worker {
                generation: 2,
                pid: 102
            })
        );
        assert!(h.sup.snapshot(h.now).last_reload.is_none(), "not a reload");
        assert_eq!(h.sup.tally().memory_recycles, [1]);
        assert_eq!(h.sup.tally().worker_starts, 2);
    }
}
