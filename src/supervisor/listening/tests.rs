//! `--ready=listening` in the supervisor: what is awaited, and a finding counted as `READY=1`.

use std::time::Duration;

use crate::supervisor::tests::{Harness, notify, w, with_policy};
use crate::supervisor::{Action, Notice, Ready};

const SEC: Duration = Duration::from_secs(1);

fn listening(change: impl FnOnce(&mut crate::supervisor::Policy)) -> Harness {
    with_policy(|p| {
        p.ready = Ready::Listening;
        change(p);
    })
}

fn seen(h: &mut Harness, pid: i32) -> Vec<Action> {
    let actions = h.sup.listening(pid, "pid 9 is in accept on fd 3", h.now);
    h.run(actions)
}

#[test]
fn a_worker_seen_listening_is_up_at_once() {
    let mut h = listening(|_| {});
    h.started();
    assert_eq!(h.sup.awaiting_listening(), vec![101]);
    seen(&mut h, 101);
    assert_eq!(h.sup.current(), Some(w(1, 101)), "no --interval to wait");
    assert!(h.sup.awaiting_listening().is_empty(), "nothing awaited");
    h.hup();
    assert_eq!(h.sup.awaiting_listening(), vec![102]);
    h.advance(SEC / 10);
    assert!(
        seen(&mut h, 101).is_empty(),
        "only the worker awaited counts"
    );
    assert!(seen(&mut h, 999).is_empty(), "a stranger");
    assert_eq!(
        seen(&mut h, 102),
        vec![
            Action::WriteStatus(vec![w(1, 101), w(2, 102)]),
            Action::Signal {
                pids: vec![101],
                signal: nix::sys::signal::Signal::SIGTERM
            }
        ]
    );
    assert_eq!(h.sup.current(), Some(w(2, 102)));
    assert!(!h.sup.interval_fallback_said);
}

#[test]
fn ready_1_still_counts_and_notify_awaits_nothing() {
    let mut h = listening(|_| {});
    h.started();
    notify(&mut h, 101, "READY=1");
    assert_eq!(h.sup.current(), Some(w(1, 101)));
    let mut h = with_policy(|_| {});
    h.started();
    assert!(
        h.sup.awaiting_listening().is_empty(),
        "--ready=notify: the probe never runs"
    );
}

#[test]
fn copies_are_awaited_each_and_the_generation_is_up_when_all_are() {
    let mut h = listening(|p| p.workers = 2);
    h.started();
    assert_eq!(h.sup.awaiting_listening(), vec![101, 102]);
    seen(&mut h, 102);
    assert_eq!(h.sup.awaiting_listening(), vec![101]);
    assert_eq!(h.sup.current(), None);
    seen(&mut h, 101);
    assert_eq!(h.sup.current(), Some(w(1, 101)));
}

#[test]
fn a_worker_never_seen_falls_back_to_the_interval_said_once() {
    let mut h = listening(|_| {});
    h.started();
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(1, 101)), "alive after --interval");
    assert!(h.sup.interval_fallback_said);
    h.hup();
    h.advance(SEC);
    assert_eq!(h.sup.current(), Some(w(2, 102)));
}

#[test]
fn ready_timeout_applies_to_listening_too() {
    let mut h = listening(|p| p.ready_timeout = Some(3 * SEC));
    h.started();
    seen(&mut h, 101);
    h.hup();
    assert!(h.advance(2 * SEC).is_empty(), "alive is not enough");
    h.advance(SEC);
    assert_eq!(h.failures, vec![2]);
    assert!(h.notices.contains(&Notice::StartFailed {
        generation: 2,
        why: "neither READY=1 nor listening within 3 secs".into(),
        serving: Some(w(1, 101))
    }));
    assert!(
        h.sup.awaiting_listening().is_empty(),
        "a failed start is not awaited"
    );
}
