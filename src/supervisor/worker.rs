//! A worker process and the workers on their way out: old generations being retired and failed
//! trials being stopped, each with the moments it gets its signal, SIGKILL, or a log line.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::vocab::Secs;
use crate::vocab::time::handover;

use super::{Action, ExitStatus, Pid, Supervisor, join};

/// A worker still alive this long after its signal, with no `kill_old_timeout` to end it, is
/// named in the log (once): it is waited for, as the original does, but the operator should know.
pub const STILL_ALIVE_NOTICE: Duration = Duration::from_secs(30);

/// How long a worker stopped for failing its trial gets to exit before SIGKILL, when no
/// `kill_old_timeout` is set: it never served, so nobody waits for its requests to finish, but a
/// stuck one must not linger for ever holding the sockets.
pub const FAILED_TRIAL_KILL_DELAY: Duration = Duration::from_secs(5);

/// One running worker process and the generation it belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Worker {
    /// Generation number (`SERVER_STARTER_GENERATION` of the worker).
    pub generation: u64,
    /// Process id.
    pub pid: Pid,
}

/// A worker that was signalled and is waited for, with the moment it gets SIGKILL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Leaving {
    pub(super) worker: Worker,
    /// Its slot (`--workers`).
    pub(super) slot: usize,
    /// When to send `signal_on_hup` (old workers during `kill_old_delay`); `None` once sent.
    #[serde(with = "handover")]
    pub(super) signal_at: Option<Instant>,
    /// When to send SIGKILL if still alive; `None` without `kill_old_timeout`.
    #[serde(with = "handover")]
    pub(super) kill_at: Option<Instant>,
    /// When to log that it is still alive though signalled (once; only without `kill_at`).
    #[serde(with = "handover")]
    pub(super) note_at: Option<Instant>,
    /// An old generation (listed in the status file) rather than a failed trial.
    pub(super) served: bool,
}

impl Supervisor {
    pub(super) fn old_workers(&self) -> impl Iterator<Item = Worker> + '_ {
        self.leaving.iter().filter(|r| r.served).map(|r| r.worker)
    }

    /// Stops a worker that failed its trial but is still running.
    pub(super) fn discard(&mut self, generation: u64, pid: Pid, now: Instant) {
        if let Some(trial) = self.trial.as_mut() {
            trial.pid = None;
        }
        self.leaving.push(Leaving {
            worker: Worker { generation, pid },
            slot: 0,
            signal_at: None,
            kill_at: Some(
                now + self
                    .policy
                    .kill_old_timeout
                    .unwrap_or(FAILED_TRIAL_KILL_DELAY),
            ),
            note_at: None,
            served: false,
        });
        self.actions.push(Action::Signal {
            pids: vec![pid],
            signal: Signal::SIGTERM,
        });
    }

    pub(super) fn signal_due_old_workers(&mut self, now: Instant) {
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

    pub(super) fn kill_overdue(&mut self, now: Instant) {
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
    pub(super) fn note_lingering(&mut self, now: Instant) {
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
                "workers still alive {} after their signal, still waiting for them \
                 (--kill-old-timeout would KILL them):{}",
                Secs(STILL_ALIVE_NOTICE),
                join(&lingering)
            );
        }
    }

    /// The leaving worker at `index` exited.
    pub(super) fn left(&mut self, index: usize, status: ExitStatus) {
        let left = self.leaving.remove(index);
        let (generation, pid) = (left.worker.generation, left.worker.pid);
        if self.stopping {
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
    }

    /// Shutdown: everyone leaves now, the trial too if its process exists, with the shutdown's
    /// SIGKILL (or still-alive notice) deadline; old workers lose their pending delay.
    pub(super) fn everyone_leaves(&mut self, now: Instant) {
        let kill_at = self.policy.kill_old_timeout.map(|t| now + t);
        let note_at = kill_at.is_none().then_some(now + STILL_ALIVE_NOTICE);
        let mut leaving: Vec<Leaving> = self
            .current
            .take()
            .into_iter()
            .map(|w| Leaving {
                worker: w,
                slot: 0,
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
                slot: 0,
                signal_at: None,
                kill_at,
                note_at,
                served: false,
            });
        }
        self.copies_leave(kill_at, note_at);
        for old in &mut self.leaving {
            old.signal_at = None;
            old.kill_at = kill_at;
            old.note_at = note_at;
        }
        self.leaving.extend(leaving);
    }
}
