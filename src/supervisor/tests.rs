//! The supervisor's transitions, driven like the event loop drives them, without a process.

use super::policy::MIN_UPTIME;
use super::worker::STILL_ALIVE_NOTICE;
use super::*;

const SEC: Duration = Duration::from_secs(1);

pub(super) struct Harness {
    pub(super) sup: Supervisor,
    /// What the environment says at every spawn (the envdir's settings).
    tunables: Tunables,
    pub(super) now: Instant,
    next_pid: Pid,
    log: Vec<Action>,
    notices: Vec<Notice>,
    failures: Vec<u64>,
}

impl Harness {
    fn new(tunables: Tunables) -> Self {
        let now = Instant::now();
        let policy = Policy {
            interval: SEC,
            signal_on_hup: Signal::SIGTERM,
            signal_on_term: Signal::SIGTERM,
            ready_timeout: None,
            kill_old_timeout: None,
            backoff_after: DEFAULT_BACKOFF_AFTER,
            backoff_max: 10 * SEC,
            shutdown_delay: Duration::ZERO,
            worker_watchdog: None,
            workers: 1,
            max_extra: None,
        };
        Harness {
            sup: Supervisor::new(policy, tunables, now),
            tunables,
            now,
            next_pid: 100,
            log: Vec::new(),
            notices: Vec::new(),
            failures: Vec::new(),
        }
    }

    pub(super) fn plain() -> Self {
        Self::new(Tunables {
            kill_old_delay: Duration::ZERO,
            auto_restart_interval: None,
        })
    }

    /// Feeds actions back like the event loop: every Spawn gets the next pid. Notices are
    /// collected apart, in `notices`.
    pub(super) fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut seen = Vec::new();
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    Action::Notify(notice) => {
                        self.notices.push(notice);
                        continue;
                    }
                    Action::RecordFailure { generation, .. } => {
                        self.failures.push(generation);
                        continue;
                    }
                    Action::Spawn { generation } => {
                        self.next_pid += 1;
                        next.extend(self.sup.spawned(
                            generation,
                            self.tunables,
                            Ok::<Pid, String>(self.next_pid),
                            self.now,
                        ));
                    }
                    Action::SpawnCopy { generation, slot } => {
                        self.next_pid += 1;
                        next.extend(self.sup.spawned_copy(
                            generation,
                            slot,
                            self.tunables,
                            Ok::<Pid, String>(self.next_pid),
                            self.now,
                        ));
                    }
                    _ => {}
                }
                seen.push(action);
            }
            queue = next;
        }
        self.log.extend(seen.clone());
        seen
    }

    pub(super) fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now += by;
        let actions = self.sup.tick(self.now);
        self.run(actions)
    }

    pub(super) fn started(&mut self) -> Vec<Action> {
        let actions = self.sup.start();
        self.run(actions)
    }

    pub(super) fn exit(&mut self, pid: Pid, raw: i32) -> Vec<Action> {
        let actions = self.sup.child_exited(pid, ExitStatus(raw), self.now);
        self.run(actions)
    }

    pub(super) fn hup(&mut self) -> Vec<Action> {
        let actions = self.sup.hangup(self.now);
        self.run(actions)
    }
}

/// Nothing is due soon: at most the notice about signalled workers still alive (the harness
/// does not make them exit).
fn only_still_alive_notices_pending(h: &Harness) {
    if let Some(due) = h.sup.next_deadline() {
        assert!(due >= h.now + STILL_ALIVE_NOTICE - 5 * SEC, "{due:?}");
    }
}

fn w(generation: u64, pid: Pid) -> Worker {
    Worker { generation, pid }
}

#[test]
fn first_generation_starts_after_interval() {
    let mut h = Harness::plain();
    assert_eq!(h.started(), vec![Action::Spawn { generation: 1 }]);
    assert_eq!(h.sup.next_deadline(), Some(h.now + SEC));
    assert!(h.advance(SEC / 2).is_empty());
    assert_eq!(
        h.advance(SEC / 2),
        vec![Action::WriteStatus(vec![w(1, 101)])]
    );
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert_eq!(h.sup.next_deadline(), None, "idle means no timer at all");
}

#[test]
fn failed_start_retries_with_next_generation_after_interval() {
    let mut h = Harness::plain();
    h.started();
    assert!(h.exit(101, 256).is_empty());
    assert_eq!(h.sup.next_deadline(), Some(h.now + SEC));
    assert_eq!(h.advance(SEC), vec![Action::Spawn { generation: 2 }]);
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
}

#[test]
fn hup_replaces_generation_and_signals_old() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    assert_eq!(h.hup(), vec![Action::Spawn { generation: 2 }]);
    assert_eq!(
        h.advance(SEC),
        vec![
            Action::WriteStatus(vec![w(1, 101), w(2, 102)]),
            Action::Signal {
                pids: vec![101],
                signal: Signal::SIGTERM
            },
        ]
    );
    assert_eq!(h.exit(101, 15), vec![Action::WriteStatus(vec![w(2, 102)])]);
}

#[test]
fn failing_new_generation_leaves_old_serving() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup();
    h.exit(102, 256);
    h.advance(SEC); // retry as generation 3
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert!(
        !h.log
            .iter()
            .any(|a| matches!(a, Action::Signal { pids, .. } if pids.contains(&101))),
        "the old worker is never signalled while no successor started"
    );
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(3, 103)));
}

#[test]
fn hup_during_start_is_kept_and_coalesced() {
    let mut h = Harness::plain();
    h.started();
    assert!(h.hup().is_empty());
    assert!(h.hup().is_empty());
    let actions = h.advance(SEC);
    assert_eq!(
        actions,
        vec![
            Action::WriteStatus(vec![w(1, 101)]),
            Action::Spawn { generation: 2 }
        ]
    );
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    only_still_alive_notices_pending(&h);
}

#[test]
fn hup_during_start_is_satisfied_by_a_retry() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup(); // generation 2 starting
    h.hup(); // pending
    h.exit(102, 256); // generation 2 fails
    h.advance(SEC); // generation 3 spawned after the HUP: it satisfies it
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(3, 103)));
    only_still_alive_notices_pending(&h);
}

#[test]
fn current_worker_dying_is_respawned() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    assert_eq!(
        h.exit(101, 9),
        vec![Action::Spawn { generation: 2 }, Action::WriteStatus(vec![])]
    );
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
}

#[test]
fn kill_old_delay_postpones_the_signal() {
    let mut h = Harness::new(Tunables {
        kill_old_delay: 5 * SEC,
        auto_restart_interval: None,
    });
    h.started();
    h.advance(SEC);
    h.hup();
    h.advance(SEC);
    assert_eq!(h.sup.next_deadline(), Some(h.now + 5 * SEC));
    assert!(h.advance(4 * SEC).is_empty());
    assert_eq!(
        h.advance(SEC),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
}

#[test]
fn terminate_signals_everyone_and_exits_when_all_are_gone() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup(); // 102 on trial
    let actions = h.sup.terminate(Signal::SIGINT, h.now);
    let actions = h.run(actions);
    assert_eq!(
        actions,
        vec![Action::Signal {
            pids: vec![101, 102],
            signal: Signal::SIGTERM
        }]
    );
    only_still_alive_notices_pending(&h);
    assert!(h.advance(10 * SEC).is_empty(), "no spawn while stopping");
    assert_eq!(h.exit(102, 15), vec![]);
    assert_eq!(
        h.exit(101, 15),
        vec![Action::WriteStatus(vec![]), Action::Exit]
    );
}

#[test]
fn term_uses_signal_on_term() {
    let mut h = Harness::plain();
    h.sup.policy.signal_on_term = Signal::SIGUSR1;
    h.started();
    h.advance(SEC);
    let actions = h.sup.terminate(Signal::SIGTERM, h.now);
    assert_eq!(
        h.run(actions),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGUSR1
        }]
    );
}

#[test]
fn auto_restart_waits_for_old_workers_until_forced() {
    let mut h = Harness::new(Tunables {
        kill_old_delay: Duration::ZERO,
        auto_restart_interval: Some(10 * SEC),
    });
    h.started();
    h.advance(SEC); // gen 1 current at t=1
    assert_eq!(h.sup.next_deadline(), Some(h.now + 10 * SEC));
    assert_eq!(h.advance(10 * SEC), vec![Action::Spawn { generation: 2 }]);
    h.advance(SEC); // gen 2 current, 101 signalled but still alive
    assert_eq!(
        h.sup.next_deadline(),
        Some(h.now + 20 * SEC),
        "forced at 2x"
    );
    h.exit(101, 15);
    assert_eq!(h.sup.next_deadline(), Some(h.now + 10 * SEC));
    assert_eq!(h.advance(10 * SEC), vec![Action::Spawn { generation: 3 }]);
}

#[test]
fn a_tick_before_the_spawn_is_reported_changes_nothing() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    assert_eq!(
        h.sup.hangup(h.now),
        vec![
            Action::Notify(Notice::Reloading),
            Action::Spawn { generation: 2 }
        ]
    );
    assert!(h.sup.tick(h.now + 10 * SEC).is_empty());
    assert!(
        h.sup
            .spawned(2, h.tunables, Ok::<Pid, String>(500), h.now)
            .is_empty()
    );
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 500)));
}

#[test]
fn spawn_failure_counts_as_failed_start() {
    let mut h = Harness::plain();
    let actions = h.sup.start();
    assert_eq!(actions, vec![Action::Spawn { generation: 1 }]);
    let actions = h.sup.spawned(1, h.tunables, Err("fork failed"), h.now);
    h.run(actions);
    assert_eq!(
        h.notices,
        vec![Notice::StartFailed {
            generation: 1,
            why: "fork failed".into(),
            serving: None
        }]
    );
    assert_eq!(h.advance(SEC), vec![Action::Spawn { generation: 2 }]);
}

#[test]
fn notices_follow_the_notify_reload_protocol() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    assert_eq!(
        h.notices,
        vec![Notice::Serving {
            worker: w(1, 101),
            status: None
        }]
    );
    h.notices.clear();
    h.hup();
    h.exit(102, 256);
    h.advance(SEC);
    h.advance(SEC);
    let actions = h.sup.terminate(Signal::SIGTERM, h.now);
    h.run(actions);
    assert_eq!(
        h.notices,
        vec![
            Notice::Reloading,
            Notice::StartFailed {
                generation: 2,
                why: "exit status:256 (exit code 1)".into(),
                serving: Some(w(1, 101))
            },
            Notice::Serving {
                worker: w(3, 103),
                status: None
            },
            Notice::Stopping,
        ]
    );
}

#[test]
fn no_reloading_before_the_first_ready() {
    let mut h = Harness::plain();
    h.started();
    h.hup(); // generation 1 still starting: systemd has not seen READY=1 yet
    assert!(h.notices.is_empty(), "{:?}", h.notices);
    h.advance(SEC); // generation 1 serves, then the kept HUP starts generation 2
    assert_eq!(
        h.notices,
        vec![
            Notice::Serving {
                worker: w(1, 101),
                status: None
            },
            Notice::Reloading
        ]
    );
    // A first generation that keeps failing: a HUP retries, still without RELOADING=1.
    let mut h = Harness::plain();
    h.started();
    h.exit(101, 256);
    h.hup();
    assert!(!h.notices.contains(&Notice::Reloading), "{:?}", h.notices);
}

#[test]
fn exit_status_reads_like_the_original_plus_meaning() {
    assert_eq!(ExitStatus(256).to_string(), "256 (exit code 1)");
    assert_eq!(ExitStatus(15).to_string(), "15 (killed by SIGTERM)");
    assert_eq!(ExitStatus(0).to_string(), "0 (exit code 0)");
}

#[test]
fn strangers_are_ignored() {
    let mut h = Harness::plain();
    h.started();
    assert!(h.exit(4242, 0).is_empty());
}

pub(super) fn with_policy(change: impl FnOnce(&mut Policy)) -> Harness {
    let mut h = Harness::plain();
    change(&mut h.sup.policy);
    h.sup.slots = h.sup.policy.workers.max(1);
    h
}

pub(super) fn notify(h: &mut Harness, pid: Pid, message: &str) -> Vec<Action> {
    let actions = h.sup.notified(pid, message, h.now);
    h.run(actions)
}

#[test]
fn ready_promotes_at_once() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup();
    h.advance(SEC / 100);
    notify(&mut h, 102, "STATUS=warming up");
    h.notices.clear();
    let actions = notify(&mut h, 102, "READY=1\n");
    assert_eq!(
        actions,
        vec![
            Action::WriteStatus(vec![w(1, 101), w(2, 102)]),
            Action::Signal {
                pids: vec![101],
                signal: Signal::SIGTERM
            }
        ]
    );
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert_eq!(
        h.notices,
        vec![Notice::Serving {
            worker: w(2, 102),
            status: Some("warming up".into())
        }],
        "the status the worker gave while starting is kept"
    );
}

#[test]
fn only_the_trial_can_declare_itself_ready() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup();
    assert!(
        notify(&mut h, 101, "READY=1").is_empty(),
        "the current worker"
    );
    assert!(notify(&mut h, 999, "READY=1").is_empty(), "a stranger");
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    h.notices.clear();
    notify(&mut h, 101, "STATUS=42 requests in flight");
    assert_eq!(
        h.notices,
        vec![Notice::WorkerStatus {
            worker: w(1, 101),
            status: "42 requests in flight".into()
        }]
    );
}

#[test]
fn ready_timeout_stops_a_silent_worker_and_keeps_the_old_one() {
    let mut h = with_policy(|p| p.ready_timeout = Some(3 * SEC));
    h.started();
    notify(&mut h, 101, "READY=1");
    h.hup(); // generation 2, pid 102, never ready
    assert!(
        h.advance(2 * SEC).is_empty(),
        "alive past the interval is not enough"
    );
    assert_eq!(
        h.advance(SEC),
        vec![Action::Signal {
            pids: vec![102],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(h.failures, vec![2]);
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    // The stopped worker is not a generation of the status file, and gets KILL later.
    assert_eq!(h.sup.live(), vec![w(1, 101)]);
    assert_eq!(h.sup.next_deadline(), Some(h.now), "the retry is due now");
    assert_eq!(
        h.advance(Duration::ZERO),
        vec![Action::Spawn { generation: 3 }]
    );
    assert_eq!(
        h.advance(5 * SEC).first(),
        Some(&Action::Signal {
            pids: vec![102],
            signal: Signal::SIGKILL
        })
    );
    h.exit(102, 9);
    assert!(h.sup.worker_pids().iter().all(|p| *p != 102));
}

#[test]
fn kill_old_timeout_escalates_to_sigkill() {
    let mut h = with_policy(|p| p.kill_old_timeout = Some(2 * SEC));
    h.started();
    h.advance(SEC);
    h.hup();
    h.advance(SEC); // 101 gets TERM
    assert_eq!(h.sup.next_deadline(), Some(h.now + 2 * SEC));
    assert_eq!(
        h.advance(2 * SEC),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGKILL
        }]
    );
}

#[test]
fn kill_old_timeout_also_bounds_shutdown() {
    let mut h = with_policy(|p| p.kill_old_timeout = Some(2 * SEC));
    h.started();
    h.advance(SEC);
    let actions = h.sup.terminate(Signal::SIGTERM, h.now);
    h.run(actions);
    assert_eq!(
        h.advance(2 * SEC),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGKILL
        }]
    );
    assert_eq!(
        h.exit(101, 9),
        vec![Action::WriteStatus(vec![]), Action::Exit]
    );
}

#[test]
fn repeated_failures_back_off_and_a_success_resets() {
    let mut h = Harness::plain();
    h.started();
    let mut waits = Vec::new();
    for _ in 0..7 {
        let pid = h.next_pid;
        h.exit(pid, 256);
        let due = h.sup.next_deadline().expect("a retry");
        waits.push(due - h.now);
        h.now = due;
        let actions = h.sup.tick(h.now);
        h.run(actions);
    }
    // Spawns are one interval apart for the first three failures (as the original), then
    // the wait doubles, capped at backoff_max (10 s here).
    assert_eq!(
        waits,
        vec![SEC, SEC, SEC, 2 * SEC, 3 * SEC, 5 * SEC, 9 * SEC],
        "interval plus 0, 0, 0, 1, 2, 4, 8 s of backoff"
    );
    h.advance(SEC);
    assert!(h.sup.current().is_some());
    let pid = h.sup.current().unwrap().pid;
    h.advance(MIN_UPTIME);
    h.exit(pid, 256); // dies after it had started and lived: respawned at once
    h.exit(h.next_pid, 256); // that one fails its start: the count was reset
    assert_eq!(h.sup.next_deadline(), Some(h.now + SEC));
}

#[test]
fn a_hup_during_backoff_retries_at_once() {
    let mut h = Harness::plain();
    h.started();
    for _ in 0..5 {
        let pid = h.next_pid;
        h.exit(pid, 256);
        let due = h.sup.next_deadline().unwrap();
        h.now = due;
        let actions = h.sup.tick(h.now);
        h.run(actions);
    }
    h.exit(h.next_pid, 256); // sixth failure: backing off
    assert!(h.sup.next_deadline().unwrap() > h.now + SEC);
    let actions = h.hup();
    assert_eq!(actions, vec![Action::Spawn { generation: 7 }]);
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(7, 107)));
}

#[test]
fn a_storm_of_hups_makes_one_more_generation() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup();
    for _ in 0..50 {
        h.hup();
    }
    h.advance(SEC);
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(3, 103)));
    only_still_alive_notices_pending(&h);
}

#[test]
fn shutdown_during_a_start_waits_for_the_new_worker_too() {
    let mut h = Harness::plain();
    h.started(); // 101 on trial, never started
    let actions = h.sup.terminate(Signal::SIGTERM, h.now);
    assert_eq!(
        h.run(actions),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(h.exit(101, 15), vec![Action::Exit]);
}

/// With `--interval=0`, a worker that exits at once is promoted first and then "dies":
/// this must back off like failed starts, not respawn as fast as fork allows.
#[test]
fn a_crash_loop_after_promotion_backs_off_whatever_the_interval() {
    let mut h = with_policy(|p| p.interval = Duration::ZERO);
    h.started();
    h.advance(Duration::ZERO); // promoted at once
    let mut waits = Vec::new();
    for _ in 0..12 {
        let pid = h.sup.current().expect("promoted").pid;
        h.exit(pid, 256);
        let wait = match h.sup.next_deadline() {
            None => Duration::ZERO, // respawned at once, promoted at the next tick
            Some(due) => due - h.now,
        };
        waits.push(wait);
        h.advance(wait);
        h.advance(Duration::ZERO);
    }
    let ms = Duration::from_millis;
    assert_eq!(
        waits,
        vec![
            ms(0),
            ms(0),
            ms(0),
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(3200),
            ms(6400),
            10 * SEC,
            10 * SEC
        ],
        "the first restarts as fast as before, then doubling up to backoff_max"
    );
    assert!(h.notices.contains(&Notice::BackingOff {
        failures: 12,
        delay: 10 * SEC
    }));
}

#[test]
fn a_worker_that_lived_its_min_uptime_resets_the_crash_count() {
    let mut h = with_policy(|p| p.interval = Duration::ZERO);
    h.started();
    h.advance(Duration::ZERO);
    for _ in 0..6 {
        let pid = h.sup.current().unwrap().pid;
        h.exit(pid, 256);
        let due = h.sup.next_deadline().unwrap_or(h.now);
        h.advance(due - h.now);
        h.advance(Duration::ZERO);
    }
    let pid = h.sup.current().unwrap().pid;
    h.advance(MIN_UPTIME);
    assert_eq!(
        h.exit(pid, 256),
        vec![Action::Spawn { generation: 8 }, Action::WriteStatus(vec![])],
        "a worker that served a while is replaced at once"
    );
}

#[test]
fn a_hup_during_crash_backoff_spawns_at_once_and_shutdown_needs_no_wait() {
    let mut h = with_policy(|p| p.interval = Duration::ZERO);
    h.started();
    h.advance(Duration::ZERO);
    for _ in 0..4 {
        let pid = h.sup.current().unwrap().pid;
        h.exit(pid, 256);
        let due = h.sup.next_deadline().unwrap_or(h.now);
        h.advance(due - h.now);
        h.advance(Duration::ZERO);
    }
    let pid = h.sup.current().unwrap().pid;
    h.exit(pid, 256);
    assert!(h.sup.next_deadline().is_some_and(|d| d > h.now), "waiting");
    assert_eq!(h.hup(), vec![Action::Spawn { generation: 6 }]);
    let pid = h.next_pid;
    h.exit(pid, 256);
    let actions = h.sup.terminate(Signal::SIGTERM, h.now);
    assert_eq!(h.run(actions), vec![Action::Exit]);
}

#[test]
fn a_worker_ignoring_its_signal_is_named_once_and_still_waited_for() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup();
    h.advance(SEC); // 101 signalled, ignores it
    assert!(h.log.contains(&Action::Signal {
        pids: vec![101],
        signal: Signal::SIGTERM
    }));
    assert_eq!(h.sup.next_deadline(), Some(h.now + STILL_ALIVE_NOTICE));
    h.advance(STILL_ALIVE_NOTICE); // logged, nothing sent
    assert!(!h.log.iter().any(|a| matches!(
        a,
        Action::Signal {
            signal: Signal::SIGKILL,
            ..
        }
    )));
    assert_eq!(h.sup.next_deadline(), None, "once, then waited for quietly");
    assert_eq!(h.sup.live(), vec![w(1, 101), w(2, 102)]);
    assert_eq!(h.exit(101, 9), vec![Action::WriteStatus(vec![w(2, 102)])]);
}

fn terminate(h: &mut Harness, signal: Signal) -> Vec<Action> {
    let actions = h.sup.terminate(signal, h.now);
    h.run(actions)
}

#[test]
fn shutdown_delay_keeps_serving_then_signals_the_workers() {
    let mut h = with_policy(|p| p.shutdown_delay = 5 * SEC);
    h.started();
    h.advance(SEC);
    assert!(
        terminate(&mut h, Signal::SIGTERM).is_empty(),
        "no signal yet"
    );
    assert_eq!(h.notices.last(), Some(&Notice::Stopping));
    let snapshot = h.sup.snapshot(h.now);
    assert!(snapshot.stopping);
    assert_eq!(snapshot.workers_signalled_at, Some(h.now + 5 * SEC));
    assert_eq!(h.sup.next_deadline(), Some(h.now + 5 * SEC));
    assert!(h.hup().is_empty(), "no reload while stopping");
    assert!(h.advance(4 * SEC).is_empty(), "still serving");
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert_eq!(
        h.advance(SEC),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(h.sup.snapshot(h.now).workers_signalled_at, Some(h.now));
    assert_eq!(
        h.exit(101, 15),
        vec![Action::WriteStatus(vec![]), Action::Exit]
    );
}

#[test]
fn a_second_signal_skips_the_shutdown_delay() {
    let mut h = with_policy(|p| p.shutdown_delay = 60 * SEC);
    h.started();
    h.advance(SEC);
    terminate(&mut h, Signal::SIGINT);
    h.advance(SEC);
    assert_eq!(
        terminate(&mut h, Signal::SIGTERM),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(h.sup.snapshot(h.now).workers_signalled_at, Some(h.now));
    assert_eq!(
        h.notices.iter().filter(|n| **n == Notice::Stopping).count(),
        1,
        "STOPPING=1 once"
    );
}

#[test]
fn the_last_reload_says_what_asked_for_it_and_how_it_ended() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    assert_eq!(
        h.sup.snapshot(h.now).last_reload,
        None,
        "start-up is no reload"
    );
    let asked = h.now;
    let actions = h.sup.request_reload(ReloadTrigger::Control, h.now);
    h.run(actions);
    let running = h.sup.snapshot(h.now).last_reload.unwrap();
    assert_eq!(
        (running.trigger, running.generation, running.started),
        (ReloadTrigger::Control, 2, asked)
    );
    assert_eq!(running.finished, None);
    h.advance(SEC);
    let done = h.sup.snapshot(h.now).last_reload.unwrap();
    assert_eq!(done.finished, Some((h.now, ReloadResult::Up)));

    let actions = h
        .sup
        .request_reload(ReloadTrigger::FileChange("/etc/app".into()), h.now);
    h.run(actions);
    h.exit(103, 256);
    let failed = h.sup.snapshot(h.now).last_reload.unwrap();
    assert_eq!(failed.trigger, ReloadTrigger::FileChange("/etc/app".into()));
    assert_eq!(
        failed.finished,
        Some((
            h.now,
            ReloadResult::Failed("exit status:256 (exit code 1)".into())
        ))
    );
}

#[test]
fn a_reload_asked_during_a_start_concerns_the_generation_after_it() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.hup(); // generation 2 on trial
    let actions = h.sup.request_reload(ReloadTrigger::Signal, h.now);
    h.run(actions);
    h.advance(SEC); // 2 is up: not the reload's, 3 begins
    let reload = h.sup.snapshot(h.now).last_reload.unwrap();
    assert_eq!((reload.generation, reload.finished), (3, None));
    h.advance(SEC);
    assert_eq!(
        h.sup.snapshot(h.now).last_reload.unwrap().finished,
        Some((h.now, ReloadResult::Up))
    );
}

fn crash_loop_errors(h: &Harness) -> usize {
    h.notices
        .iter()
        .filter(|n| matches!(n, Notice::CrashLoop { .. }))
        .count()
}

#[test]
fn a_crash_loop_is_declared_once_and_ends_when_a_worker_stays_up() {
    let mut h = with_policy(|p| p.interval = Duration::ZERO);
    h.started();
    h.advance(Duration::ZERO);
    for round in 1..=5 {
        let pid = h.sup.current().expect("promoted").pid;
        h.exit(pid, 256);
        assert_eq!(
            h.sup.snapshot(h.now).crash_loop,
            round >= super::policy::CRASH_LOOP_AFTER,
            "after {round} deaths"
        );
        let due = h.sup.next_deadline().unwrap_or(h.now);
        h.advance(due - h.now);
        h.advance(Duration::ZERO);
    }
    assert_eq!(
        crash_loop_errors(&h),
        3,
        "told to systemd at deaths 3, 4, 5"
    );
    assert!(
        matches!(
            h.notices.last(),
            Some(Notice::CrashLoop { failures: 5, .. }) | Some(Notice::Serving { .. })
        ),
        "{:?}",
        h.notices.last()
    );
    let serving = h.sup.current().unwrap();
    // Still in the episode until the new worker has lived MIN_UPTIME: the deadline says when.
    assert!(h.sup.snapshot(h.now).crash_loop);
    assert_eq!(h.sup.next_deadline(), Some(h.now + MIN_UPTIME));
    h.advance(MIN_UPTIME);
    assert!(!h.sup.snapshot(h.now).crash_loop);
    assert_eq!(
        h.notices.last(),
        Some(&Notice::CrashLoopOver { serving }),
        "STATUS= says it serves again"
    );
}

#[test]
fn a_new_generation_that_keeps_failing_is_a_crash_loop_while_the_old_one_serves() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    h.advance(10 * SEC); // the first worker has long passed its MIN_UPTIME
    h.hup();
    for _ in 0..3 {
        let pid = h.next_pid;
        h.exit(pid, 256);
        let due = h.sup.next_deadline().unwrap();
        h.advance(due - h.now);
    }
    assert!(h.sup.snapshot(h.now).crash_loop);
    assert!(h.notices.contains(&Notice::CrashLoop {
        failures: 3,
        serving: Some(w(1, 101))
    }));
    h.advance(10 * SEC);
    assert!(
        h.sup.snapshot(h.now).crash_loop,
        "the old generation staying up does not end it"
    );
}

#[test]
fn a_worker_silent_past_its_watchdog_is_stopped_killed_and_replaced() {
    let mut h = with_policy(|p| p.worker_watchdog = Some(2 * SEC));
    h.started();
    h.advance(SEC); // 101 serves
    assert_eq!(
        h.sup.next_deadline(),
        Some(h.now + SEC),
        "2 s from its spawn"
    );
    notify(&mut h, 101, "WATCHDOG=1");
    assert!(h.advance(SEC).is_empty(), "petted 1 s ago");
    notify(&mut h, 101, "STATUS=busy\nWATCHDOG=1");
    assert!(h.advance(SEC + SEC / 2).is_empty());
    assert_eq!(
        h.advance(SEC / 2),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
    let view = &h.sup.snapshot(h.now).workers[0];
    assert_eq!((view.pid, view.watchdog_kills), (101, 1));
    assert_eq!(
        h.sup.next_deadline(),
        Some(h.now + super::worker::FAILED_TRIAL_KILL_DELAY)
    );
    assert_eq!(
        h.advance(super::worker::FAILED_TRIAL_KILL_DELAY),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGKILL
        }]
    );
    assert_eq!(
        h.exit(101, 9),
        vec![Action::Spawn { generation: 2 }, Action::WriteStatus(vec![])],
        "replaced at once: it had served long enough"
    );
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert_eq!(h.sup.snapshot(h.now).workers[0].watchdog_kills, 1);
}

#[test]
fn the_watchdog_uses_kill_old_timeout_and_leaves_retiring_workers_alone() {
    let mut h = with_policy(|p| {
        p.worker_watchdog = Some(3 * SEC);
        p.kill_old_timeout = Some(SEC);
    });
    h.started();
    h.advance(SEC);
    h.hup();
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    // 101 got TERM as an old worker, and is never the watchdog's business again; 102 was
    // spawned 1 s ago.
    notify(&mut h, 101, "WATCHDOG=1");
    assert_eq!(h.sup.next_deadline(), Some(h.now + SEC));
    let actions = h.advance(2 * SEC);
    assert_eq!(
        actions,
        vec![
            Action::Signal {
                pids: vec![101],
                signal: Signal::SIGKILL
            },
            Action::Signal {
                pids: vec![102],
                signal: Signal::SIGTERM
            }
        ],
        "101 by kill_old_timeout, 102 by the watchdog"
    );
    assert_eq!(
        h.advance(SEC),
        vec![Action::Signal {
            pids: vec![102],
            signal: Signal::SIGKILL
        }],
        "KILL after kill_old_timeout"
    );
}

#[test]
fn shutdown_stops_watching() {
    let mut h = with_policy(|p| p.worker_watchdog = Some(2 * SEC));
    h.started();
    h.advance(SEC);
    terminate(&mut h, Signal::SIGTERM);
    assert!(
        h.advance(10 * SEC).is_empty(),
        "no watchdog signal while stopping"
    );
}

/// (generation, slot, pid, state) of every worker in the snapshot.
pub(super) fn slots(h: &Harness) -> Vec<(u64, usize, Pid, snapshot::WorkerState)> {
    h.sup
        .snapshot(h.now)
        .workers
        .iter()
        .map(|w| (w.generation, w.slot, w.pid, w.state))
        .collect()
}

use snapshot::WorkerState::{Starting, Stopping, Up};

#[test]
fn n_copies_start_together_and_the_generation_is_up_when_all_are() {
    let mut h = with_policy(|p| p.workers = 3);
    assert_eq!(
        h.started(),
        vec![
            Action::Spawn { generation: 1 },
            Action::SpawnCopy {
                generation: 1,
                slot: 1
            },
            Action::SpawnCopy {
                generation: 1,
                slot: 2
            }
        ]
    );
    notify(&mut h, 101, "READY=1");
    notify(&mut h, 103, "READY=1");
    assert_eq!(h.sup.current(), None, "slot 1 is not up yet");
    assert_eq!(
        slots(&h),
        vec![
            (1, 0, 101, Starting),
            (1, 1, 102, Starting),
            (1, 2, 103, Up)
        ]
    );
    notify(&mut h, 102, "READY=1");
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert_eq!(
        slots(&h),
        vec![(1, 0, 101, Up), (1, 1, 102, Up), (1, 2, 103, Up)]
    );
    let mut pids = h.sup.worker_pids();
    pids.sort();
    assert_eq!(pids, vec![101, 102, 103]);
}

#[test]
fn silent_copies_are_up_after_the_interval() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 102, Up)]);
}

#[test]
fn a_copy_that_dies_is_restarted_alone_in_its_slot() {
    let mut h = with_policy(|p| p.workers = 3);
    h.started();
    h.advance(SEC); // 101, 102, 103 up
    h.advance(10 * SEC);
    assert_eq!(
        h.exit(102, 256),
        vec![Action::SpawnCopy {
            generation: 1,
            slot: 1
        }],
        "no signal to the others, no new generation"
    );
    assert_eq!(
        slots(&h),
        vec![(1, 0, 101, Up), (1, 1, 104, Starting), (1, 2, 103, Up)]
    );
    let view = h.sup.snapshot(h.now).workers[1].clone();
    assert_eq!(view.restarts, 1);
    assert_eq!(view.predecessors, vec![ExitStatus(256)]);
    h.advance(SEC);
    assert_eq!(slots(&h)[1], (1, 1, 104, Up));
}

#[test]
fn a_copy_dying_young_again_and_again_backs_off() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC);
    h.advance(10 * SEC);
    let mut waits = Vec::new();
    for _ in 0..6 {
        let pid = slots(&h)[1].2;
        let respawn = Action::SpawnCopy {
            generation: 1,
            slot: 1,
        };
        if h.exit(pid, 256).contains(&respawn) {
            waits.push(Duration::ZERO);
        } else {
            let due = h.sup.next_deadline().unwrap();
            waits.push(due - h.now);
            assert!(h.advance(due - h.now).contains(&respawn));
        }
    }
    // The first death after 10 s of service is no failed start; then three failed starts
    // in a row are retried at once, later ones back off.
    assert_eq!(
        waits,
        vec![
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            SEC,
            2 * SEC
        ]
    );
    assert_eq!(h.sup.current(), Some(w(1, 101)), "slot 0 serves throughout");
    assert_eq!(h.sup.snapshot(h.now).workers[1].restarts, 6);
}

#[test]
fn a_copy_that_dies_while_its_generation_starts_fails_it() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC); // 101, 102 serve
    h.hup(); // 103, 104
    let actions = h.exit(104, 256);
    assert_eq!(
        actions,
        vec![Action::Signal {
            pids: vec![103],
            signal: Signal::SIGTERM
        }],
        "the new generation's own worker is stopped"
    );
    assert_eq!(h.failures, vec![2]);
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    h.exit(103, 15);
    assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 102, Up)]);
}

#[test]
fn a_reload_retires_every_old_copy_once_all_new_ones_are_up() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC);
    h.hup(); // 103, 104
    notify(&mut h, 103, "READY=1");
    assert!(h.sup.worker_pids().len() == 4);
    let actions = notify(&mut h, 104, "READY=1");
    assert!(
        actions.contains(&Action::Signal {
            pids: vec![101, 102],
            signal: Signal::SIGTERM
        }),
        "{actions:?}"
    );
    assert_eq!(
        slots(&h),
        vec![
            (1, 0, 101, Stopping),
            (1, 1, 102, Stopping),
            (2, 0, 103, Up),
            (2, 1, 104, Up)
        ]
    );
}

#[test]
fn set_workers_adds_and_retires_slots_without_a_reload() {
    let mut h = Harness::plain();
    h.started();
    h.advance(SEC);
    let actions = h.sup.set_workers(3, h.now);
    assert_eq!(
        h.run(actions),
        vec![
            Action::SpawnCopy {
                generation: 1,
                slot: 1
            },
            Action::SpawnCopy {
                generation: 1,
                slot: 2
            }
        ]
    );
    h.advance(SEC);
    assert_eq!(
        slots(&h),
        vec![(1, 0, 101, Up), (1, 1, 102, Up), (1, 2, 103, Up)]
    );
    let actions = h.sup.set_workers(1, h.now);
    assert_eq!(
        h.run(actions),
        vec![Action::Signal {
            pids: vec![102, 103],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(h.exit(103, 0), vec![]);
    assert_eq!(slots(&h), vec![(1, 0, 101, Up), (1, 1, 102, Stopping)]);
    h.hup();
    assert_eq!(
        h.sup.worker_pids().len(),
        3,
        "the next generation has one slot"
    );
}

#[test]
fn a_rolling_reload_replaces_one_slot_at_a_time_within_max_extra() {
    let mut h = with_policy(|p| {
        p.workers = 3;
        p.max_extra = Some(1);
    });
    h.started();
    h.advance(SEC); // 101, 102, 103 serve
    let mut most = 0;
    let mut step = |h: &mut Harness, actions: Vec<Action>| {
        most = most.max(h.sup.worker_pids().len());
        actions
    };
    let a = h.hup();
    assert_eq!(
        step(&mut h, a),
        vec![Action::SpawnCopy {
            generation: 2,
            slot: 1
        }]
    );
    let a = h.advance(SEC); // 104 up: the old slot 1 leaves
    assert!(step(&mut h, a).contains(&Action::Signal {
        pids: vec![102],
        signal: Signal::SIGTERM
    }));
    let a = h.exit(102, 15);
    assert_eq!(
        step(&mut h, a),
        vec![Action::SpawnCopy {
            generation: 2,
            slot: 2
        }]
    );
    let a = h.advance(SEC);
    assert!(step(&mut h, a).contains(&Action::Signal {
        pids: vec![103],
        signal: Signal::SIGTERM
    }));
    let a = h.exit(103, 15);
    assert_eq!(
        step(&mut h, a),
        vec![Action::Spawn { generation: 2 }],
        "slot 0 last"
    );
    assert_eq!(
        h.sup.current(),
        Some(w(1, 101)),
        "still the serving generation"
    );
    let a = h.advance(SEC);
    assert!(step(&mut h, a).contains(&Action::Signal {
        pids: vec![101],
        signal: Signal::SIGTERM
    }));
    assert_eq!(h.sup.current(), Some(w(2, 106)));
    assert_eq!(most, 4, "never more than N + M");
    assert_eq!(
        slots(&h),
        vec![
            (1, 0, 101, Stopping),
            (2, 0, 106, Up),
            (2, 1, 104, Up),
            (2, 2, 105, Up)
        ]
    );
}

#[test]
fn a_rolling_reload_that_fails_gives_the_serving_generation_its_slots_back() {
    let mut h = with_policy(|p| {
        p.workers = 2;
        p.max_extra = Some(1);
    });
    h.started();
    h.advance(SEC); // 101, 102
    h.hup(); // 103 in slot 1
    h.advance(SEC); // 103 up, 102 leaves
    h.exit(102, 15);
    h.run(vec![]); // the leader of generation 2 is 104
    assert_eq!(h.sup.worker_pids(), vec![101, 103, 104]);
    let actions = h.exit(104, 256);
    assert!(
        actions.contains(&Action::SpawnCopy {
            generation: 1,
            slot: 1
        }),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::Signal {
        pids: vec![103],
        signal: Signal::SIGTERM
    }));
    h.exit(103, 15);
    h.advance(SEC);
    assert_eq!(
        slots(&h),
        vec![(1, 0, 101, Up), (1, 1, 105, Up), (3, 1, 106, Starting)],
        "slot 1 serves again, and the failed start is retried, rolling again"
    );
    assert!(h.sup.worker_pids().len() <= 3);
}

#[test]
fn shutdown_stops_every_copy_and_exits_when_all_are_gone() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC);
    h.hup(); // 103, 104 starting
    assert_eq!(
        terminate(&mut h, Signal::SIGTERM),
        vec![Action::Signal {
            pids: vec![101, 102, 103, 104],
            signal: Signal::SIGTERM
        }]
    );
    assert!(
        h.advance(10 * SEC).is_empty(),
        "no copy restarted while stopping"
    );
    for pid in [104, 102, 103] {
        assert!(!h.exit(pid, 15).contains(&Action::Exit));
    }
    assert!(h.exit(101, 15).contains(&Action::Exit));
}

#[test]
fn slot_zero_that_dies_is_restarted_alone_in_its_generation() {
    let mut h = with_policy(|p| p.workers = 2);
    h.started();
    h.advance(SEC);
    h.advance(10 * SEC); // 101, 102 serve
    let actions = h.exit(101, 256);
    assert_eq!(
        actions,
        vec![
            Action::SpawnCopy {
                generation: 1,
                slot: 0
            },
            Action::WriteStatus(vec![]),
            Action::WriteStatus(vec![w(1, 103)])
        ],
        "respawned at once, in generation 1"
    );
    assert!(
        !h.log.contains(&Action::Spawn { generation: 2 }),
        "no new generation"
    );
    assert_eq!(h.sup.current(), Some(w(1, 103)));
    let view = h.sup.snapshot(h.now).workers[0].clone();
    assert_eq!((view.slot, view.pid, view.restarts), (0, 103, 1));
    assert_eq!(view.predecessors, vec![ExitStatus(256)]);
    assert_eq!(slots(&h)[1], (1, 1, 102, Up), "slot 1 untouched");
}

#[test]
fn a_copy_spawned_for_a_generation_that_is_gone_is_stopped() {
    let mut h = with_policy(|p| p.workers = 2);
    let actions = h.sup.start();
    assert!(actions.contains(&Action::SpawnCopy {
        generation: 1,
        slot: 1
    }));
    // The event loop carries out Spawn first: it fails, the generation with it.
    let actions = h.sup.spawned(
        1,
        h.tunables,
        Err::<Pid, String>("no such file".into()),
        h.now,
    );
    h.run(actions);
    let actions = h
        .sup
        .spawned_copy(1, 1, h.tunables, Ok::<Pid, String>(555), h.now);
    assert_eq!(
        actions,
        vec![Action::Signal {
            pids: vec![555],
            signal: Signal::SIGTERM
        }]
    );
    assert!(h.sup.worker_pids().contains(&555), "waited for");
}
