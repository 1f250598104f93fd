//! The settings and the pacing they impose: backoff after failed starts, the crash-loop floor
//! ([`MIN_UPTIME`]), auto-restart.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::vocab::Secs;
use crate::vocab::time::handover;

use super::{Action, Notice, Ready, Supervisor};

/// A worker that dies sooner than this after it started counts as a failed start (for backoff):
/// without it, a worker that exits at once with `--interval=0` is respawned as fast as the
/// machine can fork.
pub const MIN_UPTIME: Duration = Duration::from_secs(1);

/// Failed starts in a row retried at the normal pace before backing off: a deployment that
/// fails once or twice (a port still in use, a slow dependency) is retried promptly, a broken
/// one soon stops costing a fork every `interval`.
pub const DEFAULT_BACKOFF_AFTER: u32 = 3;

/// Failed starts in a row (a new worker that died or gave up before it was up, or a serving one
/// that died within [`MIN_UPTIME`]) that make a crash loop: logged at error level once per
/// episode, shown in `STATUS=` and the snapshot. The episode ends when a started worker has
/// lived [`MIN_UPTIME`].
pub const CRASH_LOOP_AFTER: u32 = 3;

/// The least delay backoff doubles from, so that `--interval=0` still backs off.
const BACKOFF_BASE_FLOOR: Duration = Duration::from_millis(100);

/// Doublings beyond which the backoff stops growing (before `backoff_max`): keeps the shift
/// in range whatever the count of failures.
const MAX_DOUBLINGS: u32 = 20;
/// Settings fixed for the life of start_server (the defaults are the command line's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a silent new worker must live to count as started; also the least time between
    /// two spawns.
    pub interval: Duration,
    /// Sent to old workers once their successor started.
    pub signal_on_hup: Signal,
    /// Sent to every worker when start_server gets SIGTERM.
    pub signal_on_term: Signal,
    /// A new worker must send `READY=1` within this time, or it failed.
    pub ready_timeout: Option<Duration>,
    /// Workers still alive this long after their signal (retiring or at shutdown) get SIGKILL.
    pub kill_old_timeout: Option<Duration>,
    /// Start failures in a row that are retried at the original pace; later ones back off.
    pub backoff_after: u32,
    /// The longest wait between two attempts when backing off.
    pub backoff_max: Duration,
    /// How long the workers keep serving after a terminating signal before they get theirs
    /// (a load balancer stops sending requests meanwhile).
    pub shutdown_delay: Duration,
    /// Each worker must send `WATCHDOG=1` at least this often, or it is killed and replaced.
    pub worker_watchdog: Option<Duration>,
    /// Copies of the program per generation (`--workers`), at least 1.
    pub workers: usize,
    /// Reloads roll slot by slot with at most this many workers beyond `workers` alive;
    /// `None`: every copy of the new generation at once.
    pub max_extra: Option<usize>,
    /// What counts a new worker as started besides `READY=1` (`--ready`).
    pub ready: Ready,
    /// How long a new generation serves beside the old one before the old one is signalled; a
    /// failure meanwhile rolls it back (`--bake`). Zero: off.
    pub bake: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            interval: Duration::from_secs(1),
            signal_on_hup: Signal::SIGTERM,
            signal_on_term: Signal::SIGTERM,
            ready_timeout: None,
            kill_old_timeout: None,
            backoff_after: DEFAULT_BACKOFF_AFTER,
            backoff_max: Duration::from_secs(60),
            shutdown_delay: Duration::ZERO,
            worker_watchdog: None,
            workers: 1,
            max_extra: None,
            ready: Ready::Notify,
            bake: Duration::ZERO,
        }
    }
}

/// Settings re-read from the environment (and envdir) at every spawn, as the original does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tunables {
    /// Wait this long after a generation started before signalling the old ones.
    #[serde(rename = "kill_old_delay_us", with = "handover::micros")]
    pub kill_old_delay: Duration,
    /// Restart periodically with this interval, when auto-restart is on.
    #[serde(rename = "auto_restart_interval_us", with = "handover::micros")]
    pub auto_restart_interval: Option<Duration>,
}

impl Supervisor {
    /// Extra wait before the next attempt after `failures_in_a_row` failures: none for the
    /// first `backoff_after`, then the interval doubling each time, capped.
    pub(super) fn backoff(&self) -> Duration {
        self.backoff_for(self.failures_in_a_row)
    }

    /// The backoff after `failures` failed starts in a row.
    pub(super) fn backoff_for(&self, failures: u32) -> Duration {
        let beyond = failures.saturating_sub(self.policy.backoff_after);
        if beyond == 0 {
            return Duration::ZERO;
        }
        let base = self.policy.interval.max(BACKOFF_BASE_FLOOR);
        base.saturating_mul(1u32 << (beyond - 1).min(MAX_DOUBLINGS))
            .min(self.policy.backoff_max)
    }

    /// The current worker died at `now`: one more failed start if it had lived less than
    /// [`MIN_UPTIME`]. Returns how long to wait before replacing it.
    pub(super) fn died_young(&mut self, now: Instant) -> Duration {
        let young = self
            .probation
            .take()
            .filter(|(since, _)| now.saturating_duration_since(*since) < MIN_UPTIME);
        let Some((_, before)) = young else {
            return Duration::ZERO;
        };
        self.failures_in_a_row = self.failures_in_a_row.max(before) + 1;
        self.announce_backoff(now)
    }

    /// Logs the backoff delay when it changes (not at every failure) and shows it in `STATUS=`
    /// while nothing serves; returns it.
    pub(super) fn announce_backoff(&mut self, now: Instant) -> Duration {
        let delay = self.backoff();
        if delay != self.announced_backoff {
            self.announced_backoff = delay;
            if delay.is_zero() {
                info!("restarts are back to their normal pace");
            } else {
                warn!(
                    "{} failed starts in a row: backing off, {} more before each attempt",
                    self.failures_in_a_row,
                    Secs(delay)
                );
            }
        }
        if !delay.is_zero() && self.current.is_none() {
            self.actions.push(Action::Notify(Notice::BackingOff {
                failures: self.failures_in_a_row,
                delay,
            }));
        }
        self.note_crash_loop(now);
        delay
    }

    /// After a failed start: a crash loop once [`CRASH_LOOP_AFTER`] are in a row, logged when
    /// the episode begins, told to systemd at every failure (the last word in `STATUS=`).
    fn note_crash_loop(&mut self, now: Instant) {
        if self.failures_in_a_row < CRASH_LOOP_AFTER {
            return;
        }
        if self.crash_loop.is_none() {
            self.crash_loop = Some(now);
            self.tally.crash_loops += 1;
            error!(
                "crash loop: workers keep dying before they are up ({} in a row){}",
                self.failures_in_a_row,
                match self.current {
                    Some(w) => format!(", generation {} still serving", w.generation),
                    None => ", no worker serving".to_string(),
                }
            );
        }
        self.actions.push(Action::Notify(Notice::CrashLoop {
            failures: self.failures_in_a_row,
            serving: self.current,
        }));
    }

    /// When a crash loop ends if the worker serving now is still alive: [`MIN_UPTIME`] after
    /// it started, if it started during the episode.
    pub(super) fn crash_loop_end(&self) -> Option<Instant> {
        let began = self.crash_loop?;
        self.probation
            .filter(|(since, _)| *since >= began)
            .map(|(since, _)| since + MIN_UPTIME)
    }

    /// Ends the crash-loop episode once a started worker has lived [`MIN_UPTIME`].
    pub(super) fn end_crash_loop_if_over(&mut self, now: Instant) {
        if self.crash_loop_end().is_some_and(|end| now >= end) {
            self.crash_loop = None;
            info!("crash loop over: a worker has stayed up");
            if let Some(worker) = self.current {
                self.actions
                    .push(Action::Notify(Notice::CrashLoopOver { serving: worker }));
            }
        }
    }

    pub(super) fn auto_restart_due(&self) -> Option<Instant> {
        let interval = self.tunables.auto_restart_interval?;
        self.current?;
        let wait = if self.old_workers().next().is_none() {
            interval
        } else {
            interval * 2
        };
        Some(self.last_restart + wait)
    }

    /// Auto-restart: a new generation once the interval has passed since the last one started
    /// (twice the interval while old workers are still leaving), unless one is already starting.
    pub(super) fn auto_restart_if_due(&mut self, now: Instant) {
        if let Some(due) = self.auto_restart_due()
            && self.trial.is_none()
            && now >= due
        {
            let interval = self.tunables.auto_restart_interval.unwrap_or_default();
            let forced = if self.old_workers().next().is_none() {
                ""
            } else {
                "forced, "
            };
            info!(
                "autorestart triggered ({forced}interval={})",
                interval.as_secs_f64()
            );
            self.note_reload(super::ReloadTrigger::AutoRestart, now);
            self.begin_generation();
        }
    }
}

/// ` in 2 secs` after "restarting" in a log line, or nothing when the restart is immediate.
pub(super) fn after(delay: Duration) -> String {
    if delay.is_zero() {
        String::new()
    } else {
        format!(" in {}", Secs(delay))
    }
}
