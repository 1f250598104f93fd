//! The supervisor handed from one program image to the next (an upgrade in place): the
//! [`Supervisor`] itself, serialized as it is (see its fields' serde attributes), moments as
//! offsets from the hand-over. A field a newer image added is missing from an older one's state
//! and takes its default; one an older image does not know is ignored.
//!
//! Not handed over: the settings (the next image parses the same command line) and a stop under
//! way (start_server refuses to upgrade while stopping).

use std::time::Instant;

use super::{Policy, Supervisor};
use crate::vocab::time::handover;

impl Supervisor {
    /// The state to hand to the next image, at `now`. Only called between events, when no
    /// action is pending, and never while stopping.
    pub fn export(&self, now: Instant) -> Result<serde_json::Value, serde_json::Error> {
        handover::at(now, || serde_json::to_value(self))
    }

    /// The supervisor an earlier image exported, going on at `now` with `policy` (which comes
    /// from the same command line, parsed again).
    pub fn import(
        state: serde_json::Value,
        policy: Policy,
        now: Instant,
    ) -> Result<Supervisor, serde_json::Error> {
        let mut supervisor: Supervisor = handover::at(now, || serde_json::from_value(state))?;
        supervisor.policy = policy;
        if supervisor.slots == 0 {
            supervisor.slots = policy.workers.max(1);
        }
        Ok(supervisor)
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
    use crate::supervisor::generation::Trial;
    use crate::supervisor::slots::Copy;
    use crate::supervisor::worker::Leaving;
    use crate::supervisor::{
        DEFAULT_BACKOFF_AFTER, ExitStatus, ReloadTrigger, ReloadView, Tunables, Worker,
    };
    use nix::sys::signal::Signal;
    use std::time::Duration;

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
            ready: crate::supervisor::Ready::Notify,
            bake: Duration::ZERO,
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
                replaces: None,
            });
        }
        sup.watchdog.seen = vec![(1003, now - SEC), (2003, now - 2 * SEC)];
        sup.watchdog.kills = 1;
        sup.last_reload = Some(ReloadView {
            trigger: ReloadTrigger::FileChange("/srv/app".into()),
            generation: 4,
            started: now - SEC,
            finished: None,
            attempts: 0,
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
        let state = before.export(now).unwrap();
        let later = now + 3 * SEC;
        let after = Supervisor::import(state.clone(), policy(), later).unwrap();
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
        assert_eq!(after.export(later).unwrap(), state);
    }

    #[test]
    fn the_trial_goes_on_being_judged_after_a_hand_over() {
        let now = Instant::now();
        let mut after = Supervisor::import(busy(now).export(now).unwrap(), policy(), now).unwrap();
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
