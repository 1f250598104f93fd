//! The bake's transitions (`--bake`), driven as the event loop drives them, without a process.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::supervisor::snapshot::GenerationState;
use crate::supervisor::tests::{Harness, notify, slots, w, with_policy};
use crate::supervisor::worker::FAILED_TRIAL_KILL_DELAY;
use crate::supervisor::{Action, Notice, Pid, ReloadResult, Supervisor, Tunables};

const SEC: Duration = Duration::from_secs(1);

fn baking(bake: Duration) -> Harness {
    with_policy(|p| p.bake = bake)
}

/// Generation 1 (pid 101) serving for a while, then a reload: generation 2 (pid 102) is up
/// (alive after the interval) and bakes from now.
fn reload_into_a_bake(h: &mut Harness) {
    h.started();
    h.advance(SEC);
    h.advance(10 * SEC);
    h.hup();
    h.advance(SEC);
}

/// The signals sent to `pid` so far.
fn signals_to(h: &Harness, pid: Pid) -> Vec<Signal> {
    h.log
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pids, signal } if pids.contains(&pid) => Some(*signal),
            _ => None,
        })
        .collect()
}

fn states(h: &Harness) -> Vec<(u64, GenerationState)> {
    (h.sup.snapshot(h.now).generations.iter())
        .map(|g| (g.number, g.state))
        .collect()
}

fn rolled_back(why: &str) -> Notice {
    Notice::RolledBack {
        generation: 2,
        why: format!("generation 2 failed during the bake: {why}"),
        serving: Some(w(1, 101)),
    }
}

#[test]
fn a_generation_that_bakes_well_takes_over_when_the_bake_ends() {
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    assert_eq!(
        h.sup.current(),
        Some(w(1, 101)),
        "the old one stays current"
    );
    assert_eq!(h.sup.live(), vec![w(1, 101), w(2, 102)], "both serve");
    assert!(signals_to(&h, 101).is_empty());
    assert!(h.notices.contains(&Notice::Baking {
        generation: 2,
        canary: None,
        left: 3 * SEC,
        serving: Some(w(1, 101)),
    }));
    assert_eq!(
        states(&h),
        vec![(1, GenerationState::Up), (2, GenerationState::Baking)]
    );
    let snapshot = h.sup.snapshot(h.now);
    assert_eq!(snapshot.bake.map(|b| b.ends), Some(h.now + 3 * SEC));
    assert_eq!(
        snapshot.last_reload.unwrap().finished,
        None,
        "still running"
    );
    assert_eq!(h.sup.next_deadline(), Some(h.now + 3 * SEC));
    h.notices.clear();
    assert!(h.advance(2 * SEC).is_empty());
    assert_eq!(
        h.advance(SEC),
        vec![Action::Signal {
            pids: vec![101],
            signal: Signal::SIGTERM
        }]
    );
    assert_eq!(
        h.notices,
        vec![
            Notice::Baked {
                worker: w(2, 102),
                baked: 3 * SEC
            },
            Notice::Serving {
                worker: w(2, 102),
                status: None
            }
        ],
        "READY=1 and the reload's answer when the bake ends"
    );
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert_eq!(
        h.sup.snapshot(h.now).last_reload.unwrap().finished,
        Some((h.now, ReloadResult::Up))
    );
    assert_eq!(h.exit(101, 15), vec![Action::WriteStatus(vec![w(2, 102)])]);
}

#[test]
fn a_worker_that_exits_during_the_bake_rolls_its_generation_back_for_good() {
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    h.advance(SEC);
    h.notices.clear();
    assert_eq!(
        h.exit(102, 256),
        vec![Action::WriteStatus(vec![w(1, 101)])],
        "only the old generation is listed"
    );
    let why = "worker 102 exited, status:256 (exit code 1)";
    assert_eq!(h.notices, vec![rolled_back(why)]);
    assert_eq!(h.failures, vec![2], "STATUS_FILE.failed");
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    assert_eq!(
        h.sup.snapshot(h.now).last_reload.unwrap().finished,
        Some((
            h.now,
            ReloadResult::RolledBack(format!("generation 2 failed during the bake: {why}"))
        ))
    );
    assert_eq!(states(&h), vec![(1, GenerationState::Up)]);
    // Not retried: the same code would fail again.
    assert_eq!(h.sup.next_deadline(), None);
    assert!(h.advance(600 * SEC).is_empty());
    assert!(signals_to(&h, 101).is_empty(), "the old one never stopped");
    assert!(!h.sup.snapshot(h.now).crash_loop);
    // The next reload tries again.
    assert_eq!(h.hup(), vec![Action::Spawn { generation: 3 }]);
}

#[test]
fn a_worker_silent_past_its_watchdog_during_the_bake_rolls_it_back() {
    let mut h = with_policy(|p| {
        p.bake = 10 * SEC;
        p.worker_watchdog = Some(2 * SEC);
    });
    h.started();
    h.advance(SEC);
    notify(&mut h, 101, "WATCHDOG=1");
    h.hup(); // 102 spawned, watched from now
    notify(&mut h, 102, "READY=1\nWATCHDOG=1");
    assert_eq!(states(&h)[1], (2, GenerationState::Baking));
    h.advance(SEC);
    notify(&mut h, 101, "WATCHDOG=1");
    h.notices.clear();
    assert_eq!(
        h.advance(SEC),
        vec![
            Action::Signal {
                pids: vec![102],
                signal: Signal::SIGTERM
            },
            Action::WriteStatus(vec![w(1, 101)])
        ],
        "--signal-on-hup to the silent worker"
    );
    assert_eq!(
        h.notices,
        vec![rolled_back("worker 102 sent no WATCHDOG=1 for 2 secs")]
    );
    assert_eq!(h.sup.snapshot(h.now).workers[0].watchdog_kills, 1);
    let kill_at = h.now + FAILED_TRIAL_KILL_DELAY;
    while h.now + SEC < kill_at {
        notify(&mut h, 101, "WATCHDOG=1");
        assert!(h.advance(SEC).is_empty());
    }
    notify(&mut h, 101, "WATCHDOG=1");
    assert_eq!(
        h.advance(kill_at - h.now),
        vec![Action::Signal {
            pids: vec![102],
            signal: Signal::SIGKILL
        }],
        "KILL if it does not exit"
    );
    assert_eq!(h.exit(102, 9), vec![]);
    assert_eq!(h.sup.current(), Some(w(1, 101)));
}

/// A new generation that crashes as soon as it is up (what makes a crash loop) is rolled back
/// at its first death: no restart, no backoff, no crash loop.
#[test]
fn a_generation_crash_looping_during_the_bake_is_rolled_back_at_its_first_death() {
    let mut h = with_policy(|p| {
        p.interval = Duration::ZERO;
        p.bake = 10 * SEC;
    });
    h.started();
    h.advance(Duration::ZERO);
    h.advance(10 * SEC);
    h.hup();
    h.advance(Duration::ZERO);
    assert_eq!(states(&h)[1], (2, GenerationState::Baking));
    h.advance(SEC / 10);
    h.exit(102, 256);
    assert_eq!(h.failures, vec![2]);
    for _ in 0..10 {
        h.advance(10 * SEC);
    }
    assert!(!h.log.contains(&Action::Spawn { generation: 3 }));
    let snapshot = h.sup.snapshot(h.now);
    assert!(!snapshot.crash_loop && snapshot.backoff.is_none());
    assert_eq!(h.sup.current(), Some(w(1, 101)));
}

#[test]
fn kill_old_delay_counts_from_the_end_of_the_bake() {
    let mut h = Harness::new(Tunables {
        kill_old_delay: 5 * SEC,
        auto_restart_interval: None,
    });
    h.sup.policy.bake = 3 * SEC;
    reload_into_a_bake(&mut h);
    h.advance(3 * SEC); // baked: promoted
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert!(signals_to(&h, 101).is_empty());
    assert_eq!(h.sup.next_deadline(), Some(h.now + 5 * SEC));
    assert!(h.advance(4 * SEC).is_empty());
    assert_eq!(signals_to(&h, 101), vec![]);
    h.advance(SEC);
    assert_eq!(signals_to(&h, 101), vec![Signal::SIGTERM]);
}

#[test]
fn nothing_bakes_without_a_generation_to_roll_back_to() {
    let mut h = baking(3 * SEC);
    h.started();
    h.advance(SEC);
    assert_eq!(
        h.sup.current(),
        Some(w(1, 101)),
        "a first start is up at once"
    );
    h.advance(10 * SEC);
    h.exit(101, 9); // the serving worker died: its successor is up at once too
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert!(!h.notices.iter().any(|n| matches!(n, Notice::Baking { .. })));
}

#[test]
fn the_serving_worker_dying_during_the_bake_hands_over_at_once() {
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    h.notices.clear();
    h.exit(101, 9);
    assert_eq!(
        h.sup.current(),
        Some(w(2, 102)),
        "nothing left to roll back to"
    );
    assert_eq!(
        h.notices,
        vec![Notice::Serving {
            worker: w(2, 102),
            status: None
        }]
    );
    assert_eq!(h.sup.next_deadline(), None);
    assert!(h.advance(60 * SEC).is_empty(), "no new generation");
}

#[test]
fn a_hup_during_the_bake_starts_the_next_generation_once_the_bake_is_over() {
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    assert!(h.hup().is_empty(), "kept");
    assert!(h.exit(102, 256).contains(&Action::Spawn { generation: 3 }));
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    h.hup();
    assert!(
        h.advance(3 * SEC)
            .contains(&Action::Spawn { generation: 3 })
    );
}

#[test]
fn a_bake_under_way_survives_an_upgrade_in_place() {
    let mut h = baking(3 * SEC);
    reload_into_a_bake(&mut h);
    h.advance(SEC);
    let state = h.sup.export(h.now).unwrap();
    let later = h.now + SEC / 2;
    let mut after = Supervisor::import(state, h.sup.policy, later).unwrap();
    assert_eq!(after.next_deadline(), Some(later + 2 * SEC), "2 s left");
    assert_eq!(after.live(), vec![w(1, 101), w(2, 102)]);
    assert!(after.tick(later + SEC).is_empty());
    let actions = after.tick(later + 2 * SEC);
    assert!(actions.contains(&Action::Notify(Notice::Baked {
        worker: w(2, 102),
        baked: 3 * SEC
    })));
    assert_eq!(after.current(), Some(w(2, 102)));
}

fn canary(max_extra: usize) -> Harness {
    let mut h = with_policy(|p| {
        p.workers = 3;
        p.max_extra = Some(max_extra);
        p.bake = 2 * SEC;
    });
    h.started();
    h.advance(SEC); // 101, 102, 103 serve
    h.advance(10 * SEC);
    h
}

#[test]
fn the_canary_bakes_alone_then_the_other_slots_are_replaced() {
    use crate::supervisor::snapshot::WorkerState::Up;
    let mut h = canary(2);
    assert_eq!(
        h.hup(),
        vec![Action::SpawnCopy {
            generation: 2,
            slot: 1
        }],
        "the canary alone, though --max-extra would allow two"
    );
    let actions = h.advance(SEC); // 104 up: it bakes
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Signal { .. } | Action::SpawnCopy { .. })),
        "{actions:?}"
    );
    assert!(h.notices.contains(&Notice::Baking {
        generation: 2,
        canary: Some(1),
        left: 2 * SEC,
        serving: Some(w(1, 101)),
    }));
    assert_eq!(
        slots(&h),
        vec![
            (1, 0, 101, Up),
            (1, 1, 102, Up),
            (1, 2, 103, Up),
            (2, 1, 104, Up)
        ]
    );
    assert_eq!(states(&h)[1], (2, GenerationState::Baking));
    assert!(h.advance(SEC).is_empty());
    let actions = h.advance(SEC); // baked: slot 1's old copy leaves, the roll goes on
    assert!(actions.contains(&Action::Signal {
        pids: vec![102],
        signal: Signal::SIGTERM
    }));
    assert!(actions.contains(&Action::SpawnCopy {
        generation: 2,
        slot: 2
    }));
    for _ in 0..4 {
        for pid in h.sup.worker_pids() {
            if signals_to(&h, pid).contains(&Signal::SIGTERM) {
                h.exit(pid, 0);
            }
        }
        h.advance(SEC);
    }
    assert_eq!(h.sup.current().map(|w| w.generation), Some(2));
    let bakes = h
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::Baking { .. }));
    assert_eq!(bakes.count(), 1, "the other slots do not bake");
    assert!(h.notices.contains(&Notice::Baked {
        worker: h.sup.current().unwrap(),
        baked: 2 * SEC
    }));
}

#[test]
fn a_canary_that_fails_is_rolled_back_alone() {
    use crate::supervisor::snapshot::WorkerState::Up;
    let mut h = canary(1);
    h.hup(); // 104 in slot 1
    h.advance(SEC); // up: it bakes
    h.notices.clear();
    assert_eq!(h.exit(104, 256), vec![]);
    assert_eq!(
        h.notices,
        vec![rolled_back("worker 104 exited, status:256 (exit code 1)")]
    );
    assert_eq!(
        slots(&h),
        vec![(1, 0, 101, Up), (1, 1, 102, Up), (1, 2, 103, Up)],
        "the old slots untouched"
    );
    for pid in [101, 102, 103] {
        assert!(signals_to(&h, pid).is_empty());
    }
    assert!(h.advance(600 * SEC).is_empty(), "not retried");
}
