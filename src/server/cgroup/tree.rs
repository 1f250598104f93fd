//! The subtree as the running start_server uses it: where each worker was started
//! ([`Cgroups::target`], [`Cgroups::placed`]), the end of a generation (its remains get SIGTERM
//! once it has no worker left, and `cgroup.kill` once `--kill-old-timeout` after its workers'
//! signal, or [`STRAY_GRACE`] after the last of them exited, has passed; its cgroups go once
//! empty), SIGKILL to a worker as `cgroup.kill` of its own cgroup, and the end of them all at
//! exit. Nothing here runs on a timer: the only deadline is a generation being drained.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Cgroup, Delegation, Grant, Killed, SUPERVISOR, Subtree};
use crate::error::Result;
use crate::server::event::{Event, Source};
use crate::server::process::reap::{reap, send};
use crate::server::process::signals::Signals;
pub use crate::server::process::strays::STRAY_GRACE;
use crate::supervisor::Worker;
use crate::vocab::Pid;

/// How often a cgroup killed without `cgroup.kill` (SIGKILL to each member, Linux before 5.14)
/// is looked at again until it is empty.
const KILL_ROUND: Duration = Duration::from_millis(100);

/// start_server's cgroups in use.
#[derive(Debug)]
pub struct Cgroups {
    subtree: Subtree,
    /// Each live worker's cgroup, and its generation.
    placed: BTreeMap<Pid, (u64, Cgroup)>,
    /// When each worker got its first signal to leave.
    signalled: BTreeMap<Pid, Instant>,
    /// Generations with no worker left whose cgroup still holds processes.
    draining: BTreeMap<u64, Drain>,
    kill_old_timeout: Option<Duration>,
}

/// A generation being drained.
#[derive(Debug)]
struct Drain {
    cgroup: Cgroup,
    /// When it is killed; `None` once it was (by the kernel).
    kill_at: Option<Instant>,
}

/// What an upgrade in place hands over: the subtree's root (the workers' cgroups are read
/// again from /proc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CgroupsState {
    pub dir: PathBuf,
    pub path: String,
}

/// Where a worker is to start: its cgroup, open for `clone3(CLONE_INTO_CGROUP)` and for the
/// child of a plain fork to join.
#[derive(Debug)]
pub struct Target {
    cgroup: Cgroup,
    dir: OwnedFd,
    procs: OwnedFd,
}

impl Target {
    /// The cgroup's directory and `cgroup.procs` descriptors.
    pub fn fds(&self) -> (RawFd, RawFd) {
        (self.dir.as_raw_fd(), self.procs.as_raw_fd())
    }
}

impl Cgroups {
    /// The subtree, if start_server may have one (`wanted`: `--cgroups=auto`): set up now, before
    /// the first worker. Why not is said once.
    pub fn set_up(wanted: bool, kill_old_timeout: Option<Duration>) -> Option<Cgroups> {
        if !wanted {
            return None;
        }
        let delegation = match super::detect().and_then(its_own) {
            Ok(delegation) => delegation,
            Err(why) => {
                info!("cgroups: {why}");
                return None;
            }
        };
        let subtree = match Subtree::set_up(&delegation) {
            Ok(subtree) => subtree,
            Err(e) => {
                warn!(
                    "cgroups: cannot set up {}: {e}: workers are not given a cgroup per generation",
                    delegation.path
                );
                return None;
            }
        };
        info!(
            "cgroups: a cgroup per generation below {} (controllers: {})",
            delegation.path,
            if subtree.controllers().is_empty() {
                "none".to_string()
            } else {
                subtree.controllers().join(", ")
            }
        );
        let mut cgroups = Cgroups::new(subtree, kill_old_timeout);
        // Left by an earlier start_server in this very cgroup: nothing of theirs may mix with
        // the new generations (numbered from 1 again).
        for (generation, cgroup) in cgroups.subtree.generations().unwrap_or_default() {
            if cgroup.populated().unwrap_or(false) {
                warn!(
                    "cgroups: {} holds processes of an earlier start_server: killing them",
                    cgroup.path()
                );
                let _ = cgroup.kill();
            }
            cgroups.draining.insert(
                generation,
                Drain {
                    cgroup,
                    kill_at: None,
                },
            );
        }
        cgroups.sweep(&[], Instant::now());
        Some(cgroups)
    }

    fn new(subtree: Subtree, kill_old_timeout: Option<Duration>) -> Cgroups {
        Cgroups {
            subtree,
            placed: BTreeMap::new(),
            signalled: BTreeMap::new(),
            draining: BTreeMap::new(),
            kill_old_timeout,
        }
    }

    /// For an upgrade in place.
    pub fn export(&self) -> CgroupsState {
        CgroupsState {
            dir: self.subtree.root().dir().to_path_buf(),
            path: self.subtree.root().path().to_string(),
        }
    }

    /// The subtree an earlier image set up, with `workers` placed where /proc says they are;
    /// generations without a worker are drained anew.
    pub fn adopt(
        state: CgroupsState,
        kill_old_timeout: Option<Duration>,
        workers: &[Worker],
    ) -> io::Result<Cgroups> {
        let subtree = Subtree::adopt(state.dir, state.path)?;
        let mut cgroups = Cgroups::new(subtree, kill_old_timeout);
        for worker in workers {
            if let Some(cgroup) = super::cgroup_of(worker.pid).and_then(|p| cgroups.at(&p)) {
                cgroups
                    .placed
                    .insert(worker.pid, (worker.generation, cgroup));
            }
        }
        cgroups.sweep(workers, Instant::now());
        Ok(cgroups)
    }

    /// The subtree's cgroup at `path` (as /proc/PID/cgroup shows it), if it is below the root.
    fn at(&self, path: &str) -> Option<Cgroup> {
        let root = self.subtree.root();
        let relative = path
            .strip_prefix(root.path.trim_end_matches('/'))?
            .strip_prefix('/')?;
        Some(Cgroup {
            dir: root.dir.join(relative),
            path: path.to_string(),
        })
    }

    /// The subtree's root path (the delegated cgroup).
    pub fn root_path(&self) -> &str {
        self.subtree.root.path()
    }

    /// Where generation `generation`'s worker in `slot` starts (`copies`: the generation has
    /// several): `gen-N`, or `gen-N/slot-K` (`slot-K.1`, ... while an earlier worker of the slot
    /// still holds that one), made now. `None`, said, when it cannot be: the worker then starts
    /// in start_server's own cgroup and is known by the old attribution.
    pub fn target(&mut self, generation: u64, slot: usize, copies: bool) -> Option<Target> {
        // A drain of the generation's cgroup ends: a worker joins it again.
        self.draining.remove(&generation);
        let made = self.make(generation, slot, copies).and_then(|cgroup| {
            Ok(Target {
                dir: cgroup.dir_fd()?,
                procs: cgroup.procs_fd()?,
                cgroup,
            })
        });
        match made {
            Ok(target) => Some(target),
            Err(e) => {
                warn!("cgroups: no cgroup for generation {generation}'s worker: {e}");
                None
            }
        }
    }

    fn make(&self, generation: u64, slot: usize, copies: bool) -> io::Result<Cgroup> {
        if !copies {
            return self.subtree.generation(generation, false);
        }
        // A generation that had one worker directly in it cannot pass controllers on: its
        // copies' cgroups are made without them.
        let parent = self
            .subtree
            .generation(generation, true)
            .or_else(|_| self.subtree.generation(generation, false))?;
        for n in 0.. {
            let name = match n {
                0 => format!("slot-{slot}"),
                n => format!("slot-{slot}.{n}"),
            };
            let cgroup = parent.child(&name)?;
            let held = self.placed.values().any(|(_, c)| *c == cgroup);
            if !held && !cgroup.populated()? {
                return Ok(cgroup);
            }
        }
        unreachable!("an unbounded search returns")
    }

    /// Worker `pid` was started in `target`.
    pub fn placed(&mut self, pid: Pid, generation: u64, target: Target) {
        self.placed.insert(pid, (generation, target.cgroup));
    }

    /// The cgroup path of worker `pid`, if it has one.
    pub fn of_worker(&self, pid: Pid) -> Option<&Cgroup> {
        self.placed.get(&pid).map(|(_, cgroup)| cgroup)
    }

    /// Generation `generation`'s cgroup, if it exists.
    pub fn of_generation(&self, generation: u64) -> Option<Cgroup> {
        let cgroup = Cgroup {
            dir: self.subtree.root().dir().join(format!("gen-{generation}")),
            path: format!(
                "{}/gen-{generation}",
                self.subtree.root().path().trim_end_matches('/')
            ),
        };
        cgroup.dir.is_dir().then_some(cgroup)
    }

    /// The supervisor sent `signal` to `pids`: the first signal of each worker is noted, and
    /// SIGKILL becomes `cgroup.kill` of the worker's own cgroup (what it started goes with it),
    /// unless another live worker is in it.
    pub fn signalled(&mut self, pids: &[Pid], signal: Signal, now: Instant) {
        for pid in pids {
            self.signalled.entry(*pid).or_insert(now);
            if signal != Signal::SIGKILL {
                continue;
            }
            let Some((_, cgroup)) = self.placed.get(pid) else {
                continue;
            };
            let shared = self
                .placed
                .iter()
                .any(|(other, (_, c))| other != pid && c.dir.starts_with(&cgroup.dir));
            if !shared && let Err(e) = cgroup.kill() {
                warn!("cgroups: cannot kill {}: {e}", cgroup.path());
            }
        }
    }

    /// After children exited: `workers` are those still alive. A generation with none left is
    /// drained (its remains get SIGTERM now, `cgroup.kill` at its deadline), cgroups that are
    /// empty and hold no worker are removed.
    pub fn sweep(&mut self, workers: &[Worker], now: Instant) {
        // The earliest signal of each generation's workers that are gone.
        let mut signalled: BTreeMap<u64, Instant> = BTreeMap::new();
        let alive = |pid: &Pid| workers.iter().any(|w| w.pid == *pid);
        for (pid, (generation, _)) in &self.placed {
            if let Some(at) = self.signalled.get(pid).filter(|_| !alive(pid)) {
                let earliest = signalled.entry(*generation).or_insert(*at);
                *earliest = (*earliest).min(*at);
            }
        }
        self.placed.retain(|pid, _| alive(pid));
        self.signalled.retain(|pid, _| alive(pid));
        let live: Vec<u64> = workers.iter().map(|w| w.generation).collect();
        for (generation, cgroup) in self.subtree.generations().unwrap_or_default() {
            if live.contains(&generation) {
                self.remove_empty_below(&cgroup);
                continue;
            }
            if !cgroup.populated().unwrap_or(true) {
                self.draining.remove(&generation);
                if let Err(e) = cgroup.remove() {
                    warn!("cgroups: {e}");
                }
                continue;
            }
            if self.draining.contains_key(&generation) {
                continue;
            }
            let kill_at = match (self.kill_old_timeout, signalled.get(&generation)) {
                (Some(timeout), Some(signalled)) => (*signalled + timeout).max(now),
                _ => now + STRAY_GRACE,
            };
            let members = cgroup.pids().unwrap_or_default();
            info!(
                "generation {generation} has no worker left; {} process(es) left in {}: sending \
                 TERM, KILL in {:.1}s",
                members.len(),
                cgroup.path(),
                kill_at.saturating_duration_since(now).as_secs_f64()
            );
            send(&members, Signal::SIGTERM);
            self.draining.insert(
                generation,
                Drain {
                    cgroup,
                    kill_at: Some(kill_at),
                },
            );
        }
    }

    /// The cgroups below a live generation's that are empty and hold no live worker (a copy
    /// that exited): removed.
    fn remove_empty_below(&self, generation: &Cgroup) {
        for (_, child) in generation.children().unwrap_or_default() {
            let held = self
                .placed
                .values()
                .any(|(_, c)| c.dir.starts_with(&child.dir));
            if !held && child.populated().is_ok_and(|p| !p) {
                let _ = child.remove();
            }
        }
    }

    /// Kills the drained generations whose deadline has passed.
    fn kill_due(&mut self, now: Instant) {
        for (generation, drain) in &mut self.draining {
            if drain.kill_at.is_none_or(|at| now < at) {
                continue;
            }
            match drain.cgroup.kill() {
                Ok(Killed::Kernel) => {
                    warn!(
                        "generation {generation}: processes still in {} after their grace: \
                         cgroup.kill",
                        drain.cgroup.path()
                    );
                    drain.kill_at = None;
                }
                // Again soon, until none is left.
                Ok(Killed::Signalled(n)) => {
                    drain.kill_at = (n > 0).then_some(now + KILL_ROUND);
                }
                Err(e) => {
                    warn!("cgroups: cannot kill {}: {e}", drain.cgroup.path());
                    drain.kill_at = None;
                }
            }
        }
    }

    /// At exit, every worker gone: what is left in the generations' cgroups gets SIGTERM, then
    /// `cgroup.kill` after `--kill-old-timeout` (else [`STRAY_GRACE`]); the cgroups are removed.
    /// Returns whether something had to be killed.
    pub fn stop_all(&mut self, signals: &mut Signals) -> bool {
        let generations = self.subtree.generations().unwrap_or_default();
        let mut populated: Vec<Cgroup> = Vec::new();
        for (_, cgroup) in generations {
            if cgroup.populated().unwrap_or(false) {
                send(&cgroup.pids().unwrap_or_default(), Signal::SIGTERM);
                populated.push(cgroup);
            }
        }
        let deadline = Instant::now() + self.kill_old_timeout.unwrap_or(STRAY_GRACE);
        let mut killed = false;
        if !wait_empty(&populated, signals, deadline) {
            for cgroup in &populated {
                if cgroup.populated().unwrap_or(false) {
                    warn!(
                        "processes still in {} after their grace: cgroup.kill",
                        cgroup.path()
                    );
                    killed = true;
                    let _ = cgroup.kill();
                }
            }
            wait_empty(&populated, signals, Instant::now() + STRAY_GRACE);
        }
        for (_, cgroup) in self.subtree.generations().unwrap_or_default() {
            if let Err(e) = cgroup.remove() {
                warn!("cgroups: {e}");
            }
        }
        killed
    }
}

/// The delegated cgroup, if it is start_server's alone: no other start_server manages it (its
/// `supervisor` leaf holds no other process), and, without systemd's delegation, no other process
/// is in it (a shell's, a container's, another test's).
fn its_own(delegation: Delegation) -> std::result::Result<Delegation, String> {
    let me = std::process::id() as Pid;
    let root = delegation.cgroup();
    let others = |cgroup: &Cgroup| -> Vec<Pid> {
        let pids = cgroup.pids_here().unwrap_or_default();
        pids.into_iter().filter(|p| *p != me).collect()
    };
    let leaf = Cgroup {
        dir: root.dir.join(SUPERVISOR),
        path: String::new(),
    };
    if let Some(pid) = others(&leaf).first() {
        return Err(format!(
            "its cgroup {} is managed by another start_server (process {pid}): workers are not \
             given a cgroup per generation",
            delegation.path
        ));
    }
    let strangers = others(&root);
    if delegation.grant == Grant::Writable && !strangers.is_empty() {
        return Err(format!(
            "its cgroup {} holds other processes too ({strangers:?}): it is not its own, workers \
             are not given a cgroup per generation",
            delegation.path
        ));
    }
    Ok(delegation)
}

/// Waits (reaping) until none of `cgroups` holds a process, or `deadline`; whether they are empty.
fn wait_empty(cgroups: &[Cgroup], signals: &mut Signals, deadline: Instant) -> bool {
    loop {
        reap();
        if cgroups.iter().all(|c| !c.populated().unwrap_or(false)) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        // Members that are not start_server's children end without a SIGCHLD: look again soon.
        let timeout = TimeSpec::from(deadline.min(now + KILL_ROUND) - now);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = ppoll(&mut fds, Some(timeout), None);
        let _ = signals.drain();
    }
}

/// A drain's deadline is its only wake-up.
impl Source for Cgroups {
    fn deadline(&self) -> Option<Instant> {
        self.draining.values().filter_map(|d| d.kill_at).min()
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, _: &mut Vec<Event>) -> Result<()> {
        self.kill_due(now);
        Ok(())
    }
}
