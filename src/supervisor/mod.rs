//! The supervisor as plain data: generations, workers and what happens to them.
//!
//! The OS layer (`event_loop`) turns signals, child exits, worker notifications and the passing
//! of time into calls here, and carries out the [`Action`]s they return. Nothing in this module
//! touches the OS, so every transition is tested without a process.
//!
//! A generation is one spawn attempt. It is first on *trial*. It counts as started when its
//! worker sends `READY=1`, or, for a worker that says nothing, when it is still alive `interval`
//! after its spawn (with `ready_timeout`, only `READY=1` counts, and a worker silent that long
//! failed). Then it becomes *current*, the one before it becomes *old* and gets `signal_on_hup`
//! (after `kill_old_delay`; `SIGKILL` after `kill_old_timeout` more). A trial that fails is
//! followed by the next attempt once `interval` has passed since its spawn, later (backoff) after
//! several failures in a row. A worker that dies within [`MIN_UPTIME`](policy::MIN_UPTIME) of
//! starting counts as a failed start too, so a crash loop backs off whatever `interval` is.
//!
//! This file holds the state and the event entry points; each concern has its own file:
//! `generation` (trial, current, promotion, failure), `worker` (a worker, the leaving ones and
//! their signals), `readiness` (when a trial is judged), `listening` (`--ready=listening`),
//! `bake` (`--bake`: a generation up bakes beside the old one, or is rolled back), `policy`
//! (settings, backoff, crash loop, auto-restart) and `notice` (what is asked of the OS layer and
//! told to systemd).

mod bake;
mod generation;
mod listening;
mod notice;
mod policy;
mod readiness;
mod recycle;
mod rolling;
mod slots;
pub mod snapshot;
mod state;
mod tally;
#[cfg(test)]
mod tests;
mod watchdog;
mod worker;

use std::fmt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::vocab::Secs;
use crate::vocab::signal::short_name;
use crate::vocab::time::handover;
pub use crate::vocab::{ExitStatus, Pid};
use generation::Trial;
pub use listening::Ready;
pub use notice::{Action, Notice};
pub use policy::{DEFAULT_BACKOFF_AFTER, Policy, Tunables};
use readiness::Message;
pub use snapshot::{ReloadResult, ReloadTrigger, ReloadView};
pub use tally::Tally;
use watchdog::Watchdog;
use worker::Leaving;
pub use worker::Worker;

/// All the supervisor knows: see the module documentation. What it knows is also what an upgrade
/// in place hands to the next program image ([`Supervisor::export`]): every field is written
/// as it is, moments as offsets from the hand-over (`vocab::time::handover`), except the
/// settings (the next image parses the same command line) and a stop under way (no upgrade
/// happens while stopping).
#[derive(Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Supervisor {
    #[serde(skip)]
    policy: Policy,
    /// The envdir's settings at the last spawn.
    #[serde(flatten)]
    tunables: Tunables,
    generation: u64,
    current: Option<Worker>,
    /// The serving worker's last `STATUS=`.
    current_status: Option<String>,
    trial: Option<Trial>,
    leaving: Vec<Leaving>,
    /// Copies of the program per generation (`--workers`, [`Supervisor::set_workers`]); 0 in a
    /// state from before `--workers`, which takes the command line's.
    slots: usize,
    /// The workers in slots 1.. of the starting and serving generations.
    copies: Vec<slots::Copy>,
    /// Restarts of the serving generation's slot 0, and how its workers ended.
    slot_zero_history: (u32, Vec<ExitStatus>),
    failures_in_a_row: u32,
    /// When the current worker started, and the failures in a row before it: dying within
    /// [`MIN_UPTIME`](policy::MIN_UPTIME) makes it one more failure instead of a reset.
    #[serde(with = "handover")]
    probation: Option<(Instant, u32)>,
    /// When to replace a current worker that died young (backoff); no trial runs meanwhile.
    #[serde(with = "handover")]
    respawn_at: Option<Instant>,
    /// When the crash-loop episode under way began (see
    /// [`CRASH_LOOP_AFTER`](policy::CRASH_LOOP_AFTER)).
    #[serde(with = "handover")]
    crash_loop: Option<Instant>,
    /// The backoff delay last logged, so the log says when it changes, not at every death.
    #[serde(rename = "announced_backoff_us", with = "handover::micros")]
    announced_backoff: Duration,
    restart_pending: bool,
    /// A generation has served (the service manager got `READY=1`).
    announced_ready: bool,
    #[serde(skip)]
    stopping: bool,
    /// A terminating signal received under `shutdown_delay`: when the workers get theirs, and
    /// what was received. Workers keep serving until then.
    #[serde(skip)]
    stop_due: Option<(Instant, Signal)>,
    /// When the workers were signalled to stop.
    #[serde(skip)]
    workers_signalled_at: Option<Instant>,
    /// The last reload asked for, and how it ended.
    last_reload: Option<ReloadView>,
    /// The last start that failed, even of the first generation.
    last_failure: Option<snapshot::FailureView>,
    #[serde(with = "handover")]
    last_restart: Instant,
    /// `--worker-watchdog`'s bookkeeping.
    #[serde(flatten)]
    watchdog: Watchdog,
    /// What the status file says (nothing is written until something is live).
    written_status: Vec<Worker>,
    /// `--bake`: the bake under way (or just over), if any.
    bake: Option<bake::Bake>,
    /// `--ready=listening`: the log said a generation was judged by `--interval` instead.
    interval_fallback_said: bool,
    /// What it counted since start-up (the metrics).
    tally: Tally,
    #[serde(skip)]
    actions: Vec<Action>,
}

impl Default for Supervisor {
    /// What a state from an older image lacks: nothing known, no slots (see `slots`).
    fn default() -> Self {
        Supervisor {
            slots: 0,
            ..Supervisor::new(Policy::default(), Tunables::default(), handover::now())
        }
    }
}

impl Supervisor {
    /// A supervisor with no worker yet; [`Supervisor::start`] spawns generation 1.
    pub fn new(policy: Policy, tunables: Tunables, now: Instant) -> Self {
        Supervisor {
            policy,
            tunables,
            generation: 0,
            current: None,
            current_status: None,
            trial: None,
            leaving: Vec::new(),
            slots: policy.workers.max(1),
            copies: Vec::new(),
            slot_zero_history: (0, Vec::new()),
            failures_in_a_row: 0,
            probation: None,
            respawn_at: None,
            crash_loop: None,
            announced_backoff: Duration::ZERO,
            restart_pending: false,
            announced_ready: false,
            stopping: false,
            stop_due: None,
            workers_signalled_at: None,
            last_reload: None,
            last_failure: None,
            last_restart: now,
            watchdog: Watchdog::default(),
            written_status: Vec::new(),
            bake: None,
            interval_fallback_said: false,
            tally: Tally::default(),
            actions: Vec::new(),
        }
    }

    /// Starts generation 1.
    pub fn start(&mut self) -> Vec<Action> {
        self.begin_generation();
        self.take_actions()
    }

    /// The outcome of an [`Action::Spawn`]: the settings the worker's environment gave
    /// (`tunables`, from the envdir read for it), and the new pid or why no process could be
    /// made. Any error that prints will do, so the supervisor needs nothing of the server's
    /// types.
    pub fn spawned<E: fmt::Display>(
        &mut self,
        generation: u64,
        tunables: Tunables,
        result: Result<Pid, E>,
        now: Instant,
    ) -> Vec<Action> {
        self.tunables = tunables;
        if let Some(trial) = self.trial.as_mut().filter(|t| t.generation == generation) {
            trial.spawned_at = Some(now);
            match result {
                Ok(pid) => {
                    info!(generation, worker_pid = pid, "starting new worker {pid}");
                    trial.pid = Some(pid);
                    self.tally.worker_starts += 1;
                    self.watch(pid, now);
                }
                Err(why) => {
                    warn!(generation, "failed to start a new worker: {why}");
                    self.trial_failed(why.to_string(), now);
                }
            }
        }
        self.take_actions()
    }

    /// SIGHUP: start a new generation, or one more after the one already starting.
    pub fn hangup(&mut self, now: Instant) -> Vec<Action> {
        self.request_reload(ReloadTrigger::Signal, now)
    }

    /// The newest generation begun (spawned, or about to be).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A terminating signal was received (or a stop asked for): workers are being stopped, or
    /// will be once `--shutdown-delay` is over.
    pub fn shutting_down(&self) -> bool {
        self.stopping || self.stop_due.is_some()
    }

    /// A reload asked for by `trigger` (SIGHUP, the control socket, a file change): as
    /// [`Supervisor::hangup`], recorded in the snapshot's `last_reload`.
    pub fn request_reload(&mut self, trigger: ReloadTrigger, now: Instant) -> Vec<Action> {
        if self.stopping || self.stop_due.is_some() {
            info!("received HUP while shutting down, ignored");
            return self.take_actions();
        }
        if let Some(trial) = self.trial.as_ref().filter(|t| t.failed_at.is_some()) {
            // The last attempt failed and the next one waits (interval, backoff): an operator's
            // HUP (say, after fixing the deployment) tries again now.
            info!(
                "received HUP while generation {} waits to be retried, spawning a new worker now",
                trial.generation
            );
            self.note_reload(trigger, now);
            self.reload();
        } else if let Some(trial) = &self.trial {
            info!(
                "received HUP while generation {} is {}, a new worker will follow it",
                trial.generation,
                if self.baking().is_some() {
                    "baking"
                } else {
                    "starting"
                }
            );
            self.restart_pending = true;
            self.note_reload(trigger, now);
        } else {
            info!("received HUP, spawning a new worker");
            self.note_reload(trigger, now);
            self.reload();
        }
        self.take_actions()
    }

    /// A terminating signal: stop every worker, then exit once they are all gone. With
    /// `shutdown_delay`, the workers keep serving that long first; a second signal during the
    /// delay stops them at once.
    pub fn terminate(&mut self, received: Signal, now: Instant) -> Vec<Action> {
        if self.stop_due.take().is_some() {
            info!(
                "received {} again, stopping the workers now",
                short_name(received)
            );
            self.stop_workers(received, now);
            return self.take_actions();
        }
        let delay = self.policy.shutdown_delay;
        if !self.stopping && !delay.is_zero() {
            info!(
                "received {}, serving {} more before stopping the workers \
                 (send it again to stop now)",
                short_name(received),
                Secs(delay)
            );
            self.stop_due = Some((now + delay, received));
            self.actions.push(Action::Notify(Notice::Stopping));
            return self.take_actions();
        }
        if !self.stopping {
            self.actions.push(Action::Notify(Notice::Stopping));
        }
        self.stop_workers(received, now);
        self.take_actions()
    }

    /// Signals every worker (once) and marks the supervisor as stopping.
    fn stop_workers(&mut self, received: Signal, now: Instant) {
        let pids = self.worker_pids();
        if self.stopping {
            info!(
                "received {}, still waiting for workers:{}",
                short_name(received),
                join(&pids)
            );
            return;
        }
        self.stopping = true;
        self.workers_signalled_at = Some(now);
        self.unwatch_all();
        let signal = if received == Signal::SIGTERM {
            self.policy.signal_on_term
        } else {
            Signal::SIGTERM
        };
        info!(
            "received {}, sending {} to all workers:{}",
            short_name(received),
            short_name(signal),
            join(&pids)
        );
        self.everyone_leaves(now);
        if pids.is_empty() {
            self.actions.push(Action::Exit);
        } else {
            self.actions.push(Action::Signal { pids, signal });
        }
    }

    /// A child was reaped. A child that is not a worker (a log command, a stray) yields no
    /// action: it is the OS layer's business.
    pub fn child_exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Vec<Action> {
        self.count_exit(pid);
        self.unwatch(pid);
        if self.baking_worker_exited(pid, status, now) || self.copy_exited(pid, status, now) {
        } else if self.trial.as_ref().is_some_and(|t| t.pid == Some(pid)) {
            self.trial_exited(pid, status, now);
        } else if self.current.is_some_and(|w| w.pid == pid) {
            self.current_died(pid, status, now);
        } else if let Some(index) = self.leaving.iter().position(|r| r.worker.pid == pid) {
            self.left(index, status);
        } else {
            return Vec::new();
        }
        if !self.stopping {
            self.roll();
        }
        self.update_status();
        if self.stopping && self.worker_pids().is_empty() {
            self.actions.push(Action::Exit);
        }
        self.take_actions()
    }

    /// A notification (`READY=1`, `STATUS=...` lines) sent by worker `pid` or one of its
    /// descendants. The trial's `READY=1` and `STATUS=`, and the serving worker's `STATUS=`
    /// matter; the rest is ignored.
    pub fn notified(&mut self, pid: Pid, message: &str, now: Instant) -> Vec<Action> {
        let message = Message::parse(message);
        if message.watchdog {
            self.pet(pid, now);
        }
        if !self.copy_notified(pid, message.ready, message.status.as_deref(), now)
            && !self.trial_notified(pid, &message, now)
            && let (Some(worker), Some(status)) = (
                self.current.filter(|w| w.pid == pid),
                message.status.as_deref(),
            )
        {
            self.current_status = Some(status.to_string());
            self.actions.push(Action::Notify(Notice::WorkerStatus {
                worker,
                status: status.to_string(),
            }));
        }
        self.take_actions()
    }

    /// Time passed: end trials, retry, signal or kill leaving workers, auto-restart.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        if let Some((_, received)) = self.stop_due.filter(|(due, _)| now >= *due) {
            self.stop_due = None;
            info!("shutdown delay over");
            self.stop_workers(received, now);
        }
        self.kill_overdue(now);
        self.note_lingering(now);
        self.end_crash_loop_if_over(now);
        if self.stopping {
            return self.take_actions();
        }
        self.tick_bake(now);
        self.check_watchdog(now);
        self.judge_copies(now);
        self.roll();
        if self.trial.is_some() {
            self.judge_trial(now);
        } else if self.respawn_at.is_some_and(|due| now >= due) {
            info!("backoff over, spawning a new worker");
            self.begin_generation();
        }
        self.signal_due_old_workers(now);
        self.auto_restart_if_due(now);
        self.take_actions()
    }

    /// The next moment [`Supervisor::tick`] has something to do; `None` means only a signal, a
    /// child exit or a notification can change anything.
    pub fn next_deadline(&self) -> Option<Instant> {
        let kills = self
            .leaving
            .iter()
            .flat_map(|r| [r.kill_at, r.note_at])
            .flatten()
            .min();
        if self.stopping {
            return kills;
        }
        let trial = self.trial_deadline();
        let signals = self.leaving.iter().filter_map(|r| r.signal_at).min();
        let auto = self.auto_restart_due().filter(|_| self.trial.is_none());
        let respawn = self.respawn_at.filter(|_| self.trial.is_none());
        let stop = self.stop_due.map(|(due, _)| due);
        let crash_loop = self.crash_loop_end();
        let watchdog = self.watchdog_deadline();
        let copies = self.copies_deadline();
        let bake = self.bake_deadline();
        [
            trial, signals, kills, auto, respawn, stop, crash_loop, watchdog, copies, bake,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Live generations as the status file lists them: current and old, by generation, each by
    /// its slot 0 worker (one line per generation, whatever `--workers`; a slot 0 worker replaced
    /// within its generation, for its memory, is not listed beside its successor).
    pub fn live(&self) -> Vec<Worker> {
        let mut live: Vec<Worker> = self.current.into_iter().collect();
        let serving = self.current.map(|w| w.generation);
        live.extend(
            self.leaving
                .iter()
                .filter(|l| l.served && l.slot == 0 && Some(l.worker.generation) != serving)
                .map(|l| l.worker),
        );
        live.extend(self.baking_leader());
        live.sort();
        live
    }

    /// The generation serving now, if one has started.
    #[cfg(test)]
    pub fn current(&self) -> Option<Worker> {
        self.current
    }

    /// Every worker start_server is responsible for, with its generation: current, on trial,
    /// leaving.
    pub fn workers(&self) -> Vec<Worker> {
        let mut workers: Vec<Worker> = self.current.into_iter().collect();
        workers.extend(self.copy_workers());
        workers.extend(self.leaving.iter().map(|r| r.worker));
        workers.extend(self.trial.as_ref().and_then(|t| {
            t.pid.map(|pid| Worker {
                generation: t.generation,
                pid,
            })
        }));
        workers
    }

    /// Every worker process start_server is responsible for: current, on trial, leaving.
    pub fn worker_pids(&self) -> Vec<Pid> {
        let mut pids: Vec<Pid> = self.current.iter().map(|w| w.pid).collect();
        pids.extend(self.copy_workers().map(|w| w.pid));
        pids.extend(self.leaving.iter().map(|r| r.worker.pid));
        pids.extend(self.trial.as_ref().and_then(|t| t.pid));
        pids.sort();
        pids
    }

    fn update_status(&mut self) {
        let live = self.live();
        if self.written_status != live {
            self.written_status = live.clone();
            self.actions.push(Action::WriteStatus(live));
        }
    }

    fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }
}

fn join(pids: &[Pid]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
