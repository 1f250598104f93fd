//! Log lines that could not be written (a full disk, a reader that is gone, a stalled
//! journald): counted, and announced by the next line that gets through, so that the log says
//! what it lacks and start_server never waits for it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lines dropped since the last one that got through.
static LOST: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since start-up (the control socket's `status`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines could not be written since start-up.
pub fn dropped_total() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Sends `item` with `send`, or counts it as lost; first, if lines were lost before, sends
/// `notice(count)` and, once that got through, starts counting again.
pub fn deliver(mut send: impl FnMut(&[u8]) -> bool, item: &[u8], notice: impl Fn(u64) -> Vec<u8>) {
    let lost = LOST.load(Ordering::Relaxed);
    if lost > 0 && send(&notice(lost)) {
        LOST.fetch_sub(lost, Ordering::Relaxed);
    }
    if !send(item) {
        LOST.fetch_add(1, Ordering::Relaxed);
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// What start_server says when lines could not be written.
pub fn lost_message(lost: u64) -> String {
    format!("{lost} log lines were lost")
}
