//! The supervisor as plain data: generations, workers and what happens to them.
//!
//! The OS layer (`event_loop`) turns signals, child exits, worker notifications and the passing
//! of time into calls here, and carries out the [`Action`]s they return. Nothing in this file
//! touches the OS, so every transition is tested without a process.
//!
//! A generation is one spawn attempt. It is first on *trial*. It counts as started when its
//! worker sends `READY=1`, or, for a worker that says nothing, when it is still alive `interval`
//! after its spawn (with `ready_timeout`, only `READY=1` counts, and a worker silent that long
//! failed). Then it becomes *current*, the one before it becomes *old* and gets `signal_on_hup`
//! (after `kill_old_delay`; `SIGKILL` after `kill_old_timeout` more). A trial that fails is
//! followed by the next attempt once `interval` has passed since its spawn, later (backoff) after
//! several failures in a row. A worker that dies within [`MIN_UPTIME`] of starting counts as a
//! failed start too, so a crash loop backs off whatever `interval` is.

use std::fmt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{info, warn};

use crate::runtime::signals::short_name;

/// A worker that dies sooner than this after it started counts as a failed start (for backoff):
/// without it, a worker that exits at once with `--interval=0` is respawned as fast as the
/// machine can fork.
pub const MIN_UPTIME: Duration = Duration::from_secs(1);

/// A worker still alive this long after its signal, with no `kill_old_timeout` to end it, is
/// named in the log (once): it is waited for, as the original does, but the operator should know.
pub const STILL_ALIVE_NOTICE: Duration = Duration::from_secs(30);

/// A process id, as the kernel gives it.
pub type Pid = i32;

/// One running worker process and the generation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Worker {
    /// Generation number (`SERVER_STARTER_GENERATION` of the worker).
    pub generation: u64,
    /// Process id.
    pub pid: Pid,
}

/// Settings fixed for the life of start_server.
#[derive(Debug, Clone, Copy)]
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
}

/// Settings re-read from the environment (and envdir) at every spawn, as the original does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    /// Wait this long after a generation started before signalling the old ones.
    pub kill_old_delay: Duration,
    /// Restart periodically with this interval, when auto-restart is on.
    pub auto_restart_interval: Option<Duration>,
}

/// A raw wait status, printed as the original prints `$?` plus what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(pub i32);

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.0;
        let signal = raw & 0x7f;
        if signal == 0 {
            write!(f, "{raw} (exit code {})", (raw >> 8) & 0xff)
        } else {
            let name = Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("?");
            write!(f, "{raw} (killed by {name})")
        }
    }
}

/// Something the service manager should hear about (see `notify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// This generation now serves: start-up or reload done. `status` is the worker's own last
    /// `STATUS=`, if it sent one.
    Serving {
        worker: Worker,
        status: Option<String>,
    },
    /// A reload was asked for and a new generation is on its way.
    Reloading,
    /// A spawn attempt failed; `serving` is the generation still serving, if any.
    StartFailed {
        generation: u64,
        why: String,
        serving: Option<Worker>,
    },
    /// The serving worker's own `STATUS=`.
    WorkerStatus { worker: Worker, status: String },
    /// Nothing serves and starts keep failing: the next attempt waits `delay`.
    BackingOff { failures: u32, delay: Duration },
    /// Shutting down.
    Stopping,
}

/// What the OS layer must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec a worker for this generation, then report with [`Supervisor::spawned`].
    Spawn { generation: u64 },
    /// Send `signal` to each of `pids`.
    Signal { pids: Vec<Pid>, signal: Signal },
    /// Rewrite the status file with these live generations (sorted).
    WriteStatus(Vec<Worker>),
    /// Record that this generation failed to start, and why (for `--restart`).
    RecordFailure { generation: u64, why: String },
    /// Tell the service manager.
    Notify(Notice),
    /// Every worker is gone after a shutdown: clean up and exit 0.
    Exit,
}

#[derive(Debug)]
struct Trial {
    generation: u64,
    pid: Option<Pid>,
    /// Unset until the spawn is reported.
    spawned_at: Option<Instant>,
    /// When the failure became known; the next attempt follows after the interval and backoff.
    failed_at: Option<Instant>,
    /// The worker's last `STATUS=` while on trial, shown once it serves.
    status: Option<String>,
}

/// A worker that was signalled and is waited for, with the moment it gets SIGKILL.
#[derive(Debug)]
struct Leaving {
    worker: Worker,
    /// When to send `signal_on_hup` (old workers during `kill_old_delay`); `None` once sent.
    signal_at: Option<Instant>,
    /// When to send SIGKILL if still alive; `None` without `kill_old_timeout`.
    kill_at: Option<Instant>,
    /// When to log that it is still alive though signalled (once; only without `kill_at`).
    note_at: Option<Instant>,
    /// An old generation (listed in the status file) rather than a failed trial.
    served: bool,
}

/// All the supervisor knows: see the module documentation.
#[derive(Debug)]
pub struct Supervisor {
    policy: Policy,
    tunables: Tunables,
    generation: u64,
    current: Option<Worker>,
    trial: Option<Trial>,
    leaving: Vec<Leaving>,
    failures_in_a_row: u32,
    /// When the current worker started, and the failures in a row before it: dying within
    /// [`MIN_UPTIME`] makes it one more failure instead of a reset.
    probation: Option<(Instant, u32)>,
    /// When to replace a current worker that died young (backoff); no trial runs meanwhile.
    respawn_at: Option<Instant>,
    /// The backoff delay last logged, so the log says when it changes, not at every death.
    announced_backoff: Duration,
    restart_pending: bool,
    /// A generation has served (the service manager got `READY=1`).
    announced_ready: bool,
    stopping: bool,
    last_restart: Instant,
    /// What the status file says (nothing is written until something is live).
    written_status: Vec<Worker>,
    actions: Vec<Action>,
}

impl Supervisor {
    /// A supervisor with no worker yet; [`Supervisor::start`] spawns generation 1.
    pub fn new(policy: Policy, tunables: Tunables, now: Instant) -> Self {
        Supervisor {
            policy,
            tunables,
            generation: 0,
            current: None,
            trial: None,
            leaving: Vec::new(),
            failures_in_a_row: 0,
            probation: None,
            respawn_at: None,
            announced_backoff: Duration::ZERO,
            restart_pending: false,
            announced_ready: false,
            stopping: false,
            last_restart: now,
            written_status: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Starts generation 1.
    pub fn start(&mut self) -> Vec<Action> {
        self.begin_generation();
        self.take_actions()
    }

    /// Replaces the settings that the environment can change between restarts.
    pub fn set_tunables(&mut self, tunables: Tunables) {
        self.tunables = tunables;
    }

    /// The outcome of an [`Action::Spawn`]: the new pid, or why no process could be made.
    pub fn spawned(
        &mut self,
        generation: u64,
        result: Result<Pid, String>,
        now: Instant,
    ) -> Vec<Action> {
        if let Some(trial) = self.trial.as_mut().filter(|t| t.generation == generation) {
            trial.spawned_at = Some(now);
            match result {
                Ok(pid) => {
                    info!(generation, worker_pid = pid, "starting new worker {pid}");
                    trial.pid = Some(pid);
                }
                Err(why) => {
                    warn!(generation, "failed to start a new worker: {why}");
                    self.trial_failed(why, now);
                }
            }
        }
        self.take_actions()
    }

    /// SIGHUP: start a new generation, or one more after the one already starting.
    pub fn hangup(&mut self) -> Vec<Action> {
        if self.stopping {
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
            self.reload();
        } else if let Some(trial) = &self.trial {
            info!(
                "received HUP while generation {} is starting, a new worker will follow it",
                trial.generation
            );
            self.restart_pending = true;
        } else {
            info!("received HUP, spawning a new worker");
            self.reload();
        }
        self.take_actions()
    }

    /// Starts a reload's generation, telling the service manager first: `RELOADING=1` only once
    /// it has seen `READY=1`, as the notify-reload protocol expects (before that, the service is
    /// still starting, and the first generation to serve sends the first `READY=1`).
    fn reload(&mut self) {
        if self.announced_ready {
            self.actions.push(Action::Notify(Notice::Reloading));
        }
        self.begin_generation();
    }

    /// A terminating signal: stop every worker, then exit once they are all gone.
    pub fn terminate(&mut self, received: Signal, now: Instant) -> Vec<Action> {
        let pids = self.worker_pids();
        if self.stopping {
            info!(
                "received {}, still waiting for workers:{}",
                short_name(received),
                join(&pids)
            );
            return self.take_actions();
        }
        self.stopping = true;
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
        // Everyone is leaving now; the trial too, if its process exists.
        let kill_at = self.policy.kill_old_timeout.map(|t| now + t);
        let note_at = kill_at.is_none().then_some(now + STILL_ALIVE_NOTICE);
        let mut leaving: Vec<Leaving> = self
            .current
            .take()
            .into_iter()
            .map(|w| Leaving {
                worker: w,
                signal_at: None,
                kill_at,
                note_at,
                served: true,
            })
            .collect();
        if let Some(trial) = self.trial.take()
            && let Some(pid) = trial.pid
        {
            leaving.push(Leaving {
                worker: Worker {
                    generation: trial.generation,
                    pid,
                },
                signal_at: None,
                kill_at,
                note_at,
                served: false,
            });
        }
        for old in &mut self.leaving {
            old.signal_at = None;
            old.kill_at = kill_at;
            old.note_at = note_at;
        }
        self.leaving.extend(leaving);
        self.actions.push(Action::Notify(Notice::Stopping));
        if pids.is_empty() {
            self.actions.push(Action::Exit);
        } else {
            self.actions.push(Action::Signal { pids, signal });
        }
        self.take_actions()
    }

    /// A child was reaped. Returns whether it was one of ours (a worker); other children (a
    /// log command, strays) are the OS layer's business.
    pub fn child_exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Vec<Action> {
        let stopping = self.stopping;
        if let Some(trial) = self.trial.as_mut().filter(|t| t.pid == Some(pid)) {
            let generation = trial.generation;
            trial.pid = None;
            if trial.failed_at.is_none() {
                warn!(
                    generation,
                    worker_pid = pid,
                    "new worker {pid} seems to have failed to start, exit status:{status}"
                );
                self.trial_failed(format!("exit status:{status}"), now);
            }
        } else if let Some(worker) = self.current.filter(|w| w.pid == pid) {
            self.current = None;
            let generation = worker.generation;
            let delay = self.died_young(now);
            warn!(
                generation,
                worker_pid = pid,
                "worker {pid} died unexpectedly with status:{status}, restarting{}",
                if delay.is_zero() {
                    String::new()
                } else {
                    format!(" in {} secs", delay.as_secs_f64())
                }
            );
            if self.trial.is_none() {
                if delay.is_zero() {
                    self.begin_generation();
                } else {
                    self.respawn_at = Some(now + delay);
                }
            }
        } else if let Some(index) = self.leaving.iter().position(|r| r.worker.pid == pid) {
            let left = self.leaving.remove(index);
            let generation = left.worker.generation;
            if stopping {
                info!(
                    generation,
                    worker_pid = pid,
                    "worker {pid} died, status:{status}"
                );
            } else if left.served {
                info!(
                    generation,
                    worker_pid = pid,
                    "old worker {pid} died, status:{status}"
                );
            } else {
                info!(
                    generation,
                    worker_pid = pid,
                    "stopped worker {pid} exited, status:{status}"
                );
            }
        } else {
            return Vec::new();
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
        let ready = message.lines().any(|l| l == "READY=1");
        let status = message
            .lines()
            .filter_map(|l| l.strip_prefix("STATUS="))
            .next_back();
        let trial = self
            .trial
            .as_mut()
            .filter(|t| t.pid == Some(pid) && t.failed_at.is_none());
        if let Some(trial) = trial {
            if let Some(status) = status {
                trial.status = Some(status.to_string());
            }
            if ready && !self.stopping {
                let (generation, status) = (trial.generation, trial.status.take());
                info!(
                    generation,
                    worker_pid = pid,
                    "new worker {pid} is ready (READY=1)"
                );
                self.trial = None;
                self.promote(generation, pid, status, now);
            }
        } else if let (Some(worker), Some(status)) = (self.current.filter(|w| w.pid == pid), status)
        {
            self.actions.push(Action::Notify(Notice::WorkerStatus {
                worker,
                status: status.to_string(),
            }));
        }
        self.take_actions()
    }

    /// Time passed: end trials, retry, signal or kill leaving workers, auto-restart.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.kill_overdue(now);
        self.note_lingering(now);
        if self.stopping {
            return self.take_actions();
        }
        if let Some(trial) = &self.trial {
            match (trial.failed_at, trial.pid, self.trial_deadline()) {
                (None, Some(pid), Some(due)) if now >= due => {
                    let generation = trial.generation;
                    match self.policy.ready_timeout {
                        None => {
                            let status = self.trial.take().and_then(|t| t.status);
                            self.promote(generation, pid, status, now);
                        }
                        Some(limit) => {
                            warn!(
                                generation,
                                worker_pid = pid,
                                "new worker {pid} did not send READY=1 within {} secs, stopping it",
                                limit.as_secs_f64()
                            );
                            self.discard(generation, pid, now);
                            self.trial_failed(
                                format!("no READY=1 within {} secs", limit.as_secs_f64()),
                                now,
                            );
                        }
                    }
                }
                (Some(_), _, Some(due)) if now >= due => self.begin_generation(),
                _ => {}
            }
        } else if self.respawn_at.is_some_and(|due| now >= due) {
            info!("backoff over, spawning a new worker");
            self.begin_generation();
        }
        self.signal_due_old_workers(now);
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
            self.begin_generation();
        }
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
        [trial, signals, kills, auto, respawn]
            .into_iter()
            .flatten()
            .min()
    }

    /// Live generations as the status file lists them: current and old, by generation.
    pub fn live(&self) -> Vec<Worker> {
        let mut live: Vec<Worker> = self.current.into_iter().collect();
        live.extend(self.old_workers());
        live.sort();
        live
    }

    /// The generation serving now, if one has started.
    #[cfg(test)]
    pub fn current(&self) -> Option<Worker> {
        self.current
    }

    fn old_workers(&self) -> impl Iterator<Item = Worker> + '_ {
        self.leaving.iter().filter(|r| r.served).map(|r| r.worker)
    }

    /// When the running trial is judged (not failed) or retried (failed).
    fn trial_deadline(&self) -> Option<Instant> {
        let trial = self.trial.as_ref()?;
        let spawned = trial.spawned_at?;
        match trial.failed_at {
            None => trial
                .pid
                .map(|_| spawned + self.policy.ready_timeout.unwrap_or(self.policy.interval)),
            Some(failed) => Some((spawned + self.policy.interval).max(failed) + self.backoff()),
        }
    }

    /// Extra wait before the next attempt after `failures_in_a_row` failures: none for the
    /// first `backoff_after`, then the interval doubling each time, capped.
    fn backoff(&self) -> Duration {
        let beyond = self
            .failures_in_a_row
            .saturating_sub(self.policy.backoff_after);
        if beyond == 0 {
            return Duration::ZERO;
        }
        let base = self.policy.interval.max(Duration::from_millis(100));
        base.saturating_mul(1u32 << (beyond - 1).min(20))
            .min(self.policy.backoff_max)
    }

    fn trial_failed(&mut self, why: String, now: Instant) {
        let Some(trial) = self.trial.as_mut() else {
            return;
        };
        trial.failed_at = Some(now);
        let generation = trial.generation;
        self.failures_in_a_row += 1;
        let serving = self.current;
        self.actions.push(Action::RecordFailure {
            generation,
            why: why.clone(),
        });
        self.actions.push(Action::Notify(Notice::StartFailed {
            generation,
            why,
            serving,
        }));
        self.announce_backoff();
    }

    /// The current worker died at `now`: one more failed start if it had lived less than
    /// [`MIN_UPTIME`]. Returns how long to wait before replacing it.
    fn died_young(&mut self, now: Instant) -> Duration {
        let young = self
            .probation
            .take()
            .filter(|(since, _)| now.saturating_duration_since(*since) < MIN_UPTIME);
        let Some((_, before)) = young else {
            return Duration::ZERO;
        };
        self.failures_in_a_row = self.failures_in_a_row.max(before) + 1;
        self.announce_backoff()
    }

    /// Logs the backoff delay when it changes (not at every failure) and shows it in `STATUS=`
    /// while nothing serves; returns it.
    fn announce_backoff(&mut self) -> Duration {
        let delay = self.backoff();
        if delay != self.announced_backoff {
            self.announced_backoff = delay;
            if delay.is_zero() {
                info!("restarts are back to their normal pace");
            } else {
                warn!(
                    "{} failed starts in a row: backing off, {} secs more before each attempt",
                    self.failures_in_a_row,
                    delay.as_secs_f64()
                );
            }
        }
        if !delay.is_zero() && self.current.is_none() {
            self.actions.push(Action::Notify(Notice::BackingOff {
                failures: self.failures_in_a_row,
                delay,
            }));
        }
        delay
    }

    /// Stops a worker that failed its trial but is still running.
    fn discard(&mut self, generation: u64, pid: Pid, now: Instant) {
        if let Some(trial) = self.trial.as_mut() {
            trial.pid = None;
        }
        self.leaving.push(Leaving {
            worker: Worker { generation, pid },
            signal_at: None,
            kill_at: Some(
                now + self
                    .policy
                    .kill_old_timeout
                    .unwrap_or(Duration::from_secs(5)),
            ),
            note_at: None,
            served: false,
        });
        self.actions.push(Action::Signal {
            pids: vec![pid],
            signal: Signal::SIGTERM,
        });
    }

    fn begin_generation(&mut self) {
        self.generation += 1;
        self.restart_pending = false;
        self.respawn_at = None;
        self.trial = Some(Trial {
            generation: self.generation,
            pid: None,
            spawned_at: None,
            failed_at: None,
            status: None,
        });
        self.actions.push(Action::Spawn {
            generation: self.generation,
        });
    }

    fn promote(&mut self, generation: u64, pid: Pid, status: Option<String>, now: Instant) {
        self.probation = Some((now, self.failures_in_a_row));
        self.failures_in_a_row = 0;
        let delay = self.tunables.kill_old_delay;
        if let Some(previous) = self.current.replace(Worker { generation, pid }) {
            self.leaving.push(Leaving {
                worker: previous,
                signal_at: Some(now + delay),
                kill_at: None,
                note_at: None,
                served: true,
            });
        }
        self.last_restart = now;
        self.announced_ready = true;
        self.actions.push(Action::Notify(Notice::Serving {
            worker: Worker { generation, pid },
            status,
        }));
        let mut waiting: Vec<Pid> = self
            .leaving
            .iter()
            .filter(|r| r.signal_at.is_some())
            .map(|r| r.worker.pid)
            .collect();
        waiting.sort();
        info!(
            generation,
            worker_pid = pid,
            "new worker is now running, sending {} to old workers:{}",
            short_name(self.policy.signal_on_hup),
            if waiting.is_empty() {
                "none".to_string()
            } else {
                join(&waiting)
            }
        );
        if !delay.is_zero() && !waiting.is_empty() {
            info!(
                "sleeping {} secs before killing old workers",
                delay.as_secs_f64()
            );
        }
        self.update_status();
        self.signal_due_old_workers(now);
        if self.restart_pending {
            info!("received HUP, spawning a new worker");
            self.reload();
        }
    }

    fn signal_due_old_workers(&mut self, now: Instant) {
        let kill_after = self.policy.kill_old_timeout;
        let mut due = Vec::new();
        for leaving in &mut self.leaving {
            if leaving.signal_at.is_some_and(|at| now >= at) {
                leaving.signal_at = None;
                leaving.kill_at = kill_after.map(|t| now + t);
                leaving.note_at = kill_after.is_none().then_some(now + STILL_ALIVE_NOTICE);
                due.push(leaving.worker.pid);
            }
        }
        if !due.is_empty() {
            due.sort();
            info!("killing old workers:{}", join(&due));
            self.actions.push(Action::Signal {
                pids: due,
                signal: self.policy.signal_on_hup,
            });
        }
    }

    fn kill_overdue(&mut self, now: Instant) {
        let mut overdue = Vec::new();
        for leaving in &mut self.leaving {
            if leaving.kill_at.is_some_and(|at| now >= at) {
                leaving.kill_at = None;
                overdue.push(leaving.worker.pid);
            }
        }
        if !overdue.is_empty() {
            overdue.sort();
            warn!(
                "workers still alive after their signal, sending KILL:{}",
                join(&overdue)
            );
            self.actions.push(Action::Signal {
                pids: overdue,
                signal: Signal::SIGKILL,
            });
        }
    }

    /// Names, once, the signalled workers still alive after [`STILL_ALIVE_NOTICE`].
    fn note_lingering(&mut self, now: Instant) {
        let mut lingering = Vec::new();
        for leaving in &mut self.leaving {
            if leaving.note_at.is_some_and(|at| now >= at) {
                leaving.note_at = None;
                lingering.push(leaving.worker.pid);
            }
        }
        if !lingering.is_empty() {
            lingering.sort();
            warn!(
                "workers still alive {} secs after their signal, still waiting for them \
                 (--kill-old-timeout would KILL them):{}",
                STILL_ALIVE_NOTICE.as_secs(),
                join(&lingering)
            );
        }
    }

    fn auto_restart_due(&self) -> Option<Instant> {
        let interval = self.tunables.auto_restart_interval?;
        self.current?;
        let wait = if self.old_workers().next().is_none() {
            interval
        } else {
            interval * 2
        };
        Some(self.last_restart + wait)
    }

    /// Every worker start_server is responsible for, with its generation: current, on trial,
    /// leaving.
    pub fn workers(&self) -> Vec<Worker> {
        let mut workers: Vec<Worker> = self.current.into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    struct Harness {
        sup: Supervisor,
        now: Instant,
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
                backoff_after: 3,
                backoff_max: 10 * SEC,
            };
            Harness {
                sup: Supervisor::new(policy, tunables, now),
                now,
                next_pid: 100,
                log: Vec::new(),
                notices: Vec::new(),
                failures: Vec::new(),
            }
        }

        fn plain() -> Self {
            Self::new(Tunables {
                kill_old_delay: Duration::ZERO,
                auto_restart_interval: None,
            })
        }

        /// Feeds actions back like the event loop: every Spawn gets the next pid. Notices are
        /// collected apart, in `notices`.
        fn run(&mut self, actions: Vec<Action>) -> Vec<Action> {
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
                            next.extend(self.sup.spawned(generation, Ok(self.next_pid), self.now));
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

        fn advance(&mut self, by: Duration) -> Vec<Action> {
            self.now += by;
            let actions = self.sup.tick(self.now);
            self.run(actions)
        }

        fn started(&mut self) -> Vec<Action> {
            let actions = self.sup.start();
            self.run(actions)
        }

        fn exit(&mut self, pid: Pid, raw: i32) -> Vec<Action> {
            let actions = self.sup.child_exited(pid, ExitStatus(raw), self.now);
            self.run(actions)
        }

        fn hup(&mut self) -> Vec<Action> {
            let actions = self.sup.hangup();
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
            h.sup.hangup(),
            vec![
                Action::Notify(Notice::Reloading),
                Action::Spawn { generation: 2 }
            ]
        );
        assert!(h.sup.tick(h.now + 10 * SEC).is_empty());
        assert!(h.sup.spawned(2, Ok(500), h.now).is_empty());
        h.advance(SEC);
        assert_eq!(h.sup.current(), Some(w(2, 500)));
    }

    #[test]
    fn spawn_failure_counts_as_failed_start() {
        let mut h = Harness::plain();
        let actions = h.sup.start();
        assert_eq!(actions, vec![Action::Spawn { generation: 1 }]);
        let actions = h.sup.spawned(1, Err("fork failed".into()), h.now);
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

    fn with_policy(change: impl FnOnce(&mut Policy)) -> Harness {
        let mut h = Harness::plain();
        change(&mut h.sup.policy);
        h
    }

    fn notify(h: &mut Harness, pid: Pid, message: &str) -> Vec<Action> {
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
}
