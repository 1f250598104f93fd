//! What the supervisor asks of the OS layer ([`Action`]) and tells the service manager
//! ([`Notice`]): plain values, carried out by the event loop.

use std::time::Duration;

use nix::sys::signal::Signal;

#[cfg(doc)]
use super::Supervisor;
use super::{Pid, Worker};

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
    /// Workers keep dying before they are up (see `CRASH_LOOP_AFTER`); `serving` is the
    /// generation still serving, if any.
    CrashLoop {
        failures: u32,
        serving: Option<Worker>,
    },
    /// The crash loop is over: this worker has stayed up.
    CrashLoopOver { serving: Worker },
    /// A new generation is up (with `canary`, its worker in that slot) and bakes `left` beside
    /// `serving` before the old workers are signalled (`--bake`).
    Baking {
        generation: u64,
        canary: Option<usize>,
        left: Duration,
        serving: Option<Worker>,
    },
    /// This generation baked `baked` and is promoted now: [`Notice::Serving`] follows.
    Baked { worker: Worker, baked: Duration },
    /// This generation failed during its bake and was rolled back: `why` is the outcome
    /// (`generation N failed during the bake: ...`); `serving` serves on.
    RolledBack {
        generation: u64,
        why: String,
        serving: Option<Worker>,
    },
    /// Shutting down.
    Stopping,
}

/// What the OS layer must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork and exec a worker for this generation, then report with [`Supervisor::spawned`].
    Spawn { generation: u64 },
    /// Fork and exec the copy of this generation's worker in `slot` (1 and above; see
    /// `--workers`), then report with [`Supervisor::spawned_copy`].
    SpawnCopy { generation: u64, slot: usize },
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
