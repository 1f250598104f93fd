//! Processes start_server adopts as a child subreaper: descendants of workers whose parent
//! exited (a daemonized helper, say). Each is attributed to the generation it came from: by its
//! cgroup when generations have cgroups (exact, whatever it did to its environment, session or
//! process group), else by the `SERVER_STARTER_GENERATION` it inherited (every descendant has it
//! unless it scrubbed its environment), else by being in a live worker's process group or
//! session. One that belongs to
//! a live generation (on trial, current or still leaving) is left alone until that generation's
//! worker is gone; the others, whose generation is gone or cannot be told, are strays: they get
//! SIGTERM, and at shutdown SIGKILL if still there. The sorting is done only when a worker exits
//! and at shutdown, from /proc.
//!
//! As PID 1 (of a container), every orphan of the PID namespace comes to start_server, also
//! those of processes started from outside (`docker exec`, `kubectl exec`): one that cannot be
//! told to come from a worker is foreign, left alone and reaped when it exits, and gets SIGTERM
//! only at shutdown (when the kernel would kill it anyway).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::Signal;
use tracing::{info, warn};

use crate::server::process::reap::{children, send, wait_for_exit};
use crate::server::process::signals::Signals;
use crate::supervisor::Worker;
use crate::vocab::Pid;

/// How long processes left behind get after SIGTERM (and again after SIGKILL) at exit.
pub const STRAY_GRACE: Duration = Duration::from_secs(5);

/// Adopted processes, as last sorted.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Sent SIGTERM, waited for.
    strays: BTreeSet<Pid>,
    /// Left alone: the generation each belongs to, whose worker was alive when last sorted.
    spared: BTreeMap<Pid, u64>,
    /// Left alone as PID 1: origin unknown, maybe not from a worker at all.
    foreign: BTreeSet<Pid>,
    /// start_server is PID 1: an origin that cannot be told is foreign, not a stray.
    init: bool,
    /// The path of start_server's cgroup subtree, when generations have cgroups (`gen-N`
    /// below it).
    cgroups: Option<String>,
}

/// What /proc says about an adopted process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its `SERVER_STARTER_GENERATION`, if it has one.
    pub generation: Option<u64>,
    /// Its process group.
    pub group: Pid,
    /// Its session.
    pub session: Pid,
}

impl Adopted {
    /// Nothing adopted yet; `init` when start_server is PID 1.
    pub fn new(init: bool) -> Adopted {
        Adopted {
            init,
            ..Adopted::default()
        }
    }

    /// Generations have cgroups below `root`: a process is attributed by its cgroup.
    pub fn by_cgroup(&mut self, root: &str) {
        self.cgroups = Some(root.to_string());
    }

    /// The processes left behind by `generation` that are left alone while it runs.
    pub fn spared_of(&self, generation: u64) -> impl Iterator<Item = Pid> + '_ {
        self.spared
            .iter()
            .filter(move |(_, g)| **g == generation)
            .map(|(pid, _)| *pid)
    }

    /// Sorts `children` (start_server's, workers and the log command excluded by the caller)
    /// against the live `workers`; returns the new strays, to be sent SIGTERM.
    pub fn sort(
        &mut self,
        children: impl IntoIterator<Item = Pid>,
        workers: &[Worker],
        origin: impl Fn(Pid) -> Origin,
    ) -> Vec<Pid> {
        let mut term = Vec::new();
        for pid in children {
            if self.strays.contains(&pid) || self.foreign.contains(&pid) {
                continue;
            }
            // A process already attributed keeps its generation: /proc is read once per process.
            let origin = match self.spared.get(&pid) {
                Some(&generation) => Origin {
                    generation: Some(generation),
                    ..Origin::default()
                },
                None => origin(pid),
            };
            match owner(&origin, workers) {
                Some(worker) => {
                    if self.spared.insert(pid, worker.generation).is_none() {
                        info!(
                            "process {pid} was left behind by generation {}, whose worker {} \
                             still runs: left alone until it exits",
                            worker.generation, worker.pid
                        );
                    }
                }
                None if self.init && origin.generation.is_none() => {
                    self.spared.remove(&pid);
                    self.foreign.insert(pid);
                    info!(
                        "process {pid} was adopted but cannot be told to come from a worker: \
                         left alone until start_server stops"
                    );
                }
                None => {
                    self.spared.remove(&pid);
                    self.strays.insert(pid);
                    let whose = match origin.generation {
                        Some(g) => format!("generation {g}, no longer running"),
                        None => "generation unknown".to_string(),
                    };
                    warn!("process {pid} was left behind by a worker, sending TERM ({whose})");
                    term.push(pid);
                }
            }
        }
        term
    }

    /// Children that are neither workers nor start_server's own (`ours`: the log command, an
    /// upgrade's check) were left behind by
    /// workers (a daemonized child, say): those of a generation that no longer runs get
    /// SIGTERM, and are reaped when they exit.
    pub fn adopt(&mut self, workers: &[Worker], ours: &[Pid]) {
        let adopted = children()
            .into_iter()
            .filter(|pid| !ours.contains(pid) && !workers.iter().any(|w| w.pid == *pid));
        let root = self.cgroups.clone();
        let term = self.sort(adopted, workers, |pid| {
            let mut found = origin(pid);
            if let Some(root) = &root {
                found.generation = generation_by_cgroup(pid, root).or(found.generation);
            }
            found
        });
        send(&term, Signal::SIGTERM);
    }

    /// At exit: nothing a worker left behind outlives start_server (TERM, then KILL); as PID 1,
    /// nothing else either, since the kernel kills whatever is left when PID 1 exits. Returns
    /// whether something had to be killed.
    pub fn stop_all(&mut self, signals: &mut Signals, ours: &[Pid]) -> bool {
        self.adopt(&[], ours);
        send(&self.stop_foreign(), Signal::SIGTERM);
        let mut strays = self.take_strays();
        wait_for_exit(signals, &mut strays, STRAY_GRACE);
        if strays.is_empty() {
            return false;
        }
        let pids: Vec<Pid> = strays.iter().copied().collect();
        warn!("processes left behind still alive, sending KILL:{pids:?}");
        send(&pids, Signal::SIGKILL);
        wait_for_exit(signals, &mut strays, STRAY_GRACE);
        true
    }

    /// Forgets a reaped child that was neither a worker nor the log command, and logs its exit.
    pub fn reaped(&mut self, pid: Pid, status: impl std::fmt::Display) {
        if let Some(generation) = self.spared.remove(&pid) {
            info!("process {pid} left behind by generation {generation} exited, status:{status}");
        } else if self.strays.remove(&pid) || !self.init {
            info!("process {pid} left behind by a worker exited, status:{status}");
        } else {
            // As PID 1, not known to come from a worker (maybe exited before it was sorted).
            self.foreign.remove(&pid);
            info!("adopted process {pid} exited, status:{status}");
        }
    }

    /// At shutdown: the foreign processes become strays; returns them, to be sent SIGTERM.
    pub fn stop_foreign(&mut self) -> Vec<Pid> {
        let foreign = std::mem::take(&mut self.foreign);
        if !foreign.is_empty() {
            warn!("stopping, sending TERM to adopted processes:{foreign:?}");
        }
        self.strays.extend(&foreign);
        foreign.into_iter().collect()
    }

    /// The strays still waited for, handed over for the last wait at shutdown.
    pub fn take_strays(&mut self) -> BTreeSet<Pid> {
        std::mem::take(&mut self.strays)
    }
}

/// The live worker an adopted process belongs to, if any.
fn owner(origin: &Origin, workers: &[Worker]) -> Option<Worker> {
    match origin.generation {
        Some(generation) => workers.iter().find(|w| w.generation == generation),
        None => workers
            .iter()
            .find(|w| w.pid == origin.group || w.pid == origin.session),
    }
    .copied()
}

/// Reads `pid`'s origin from /proc; what cannot be read stays unknown.
pub fn origin(pid: Pid) -> Origin {
    let mut origin = Origin::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // After the command name in parentheses: state, ppid, pgrp, session.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
        origin.group = field(2);
        origin.session = field(3);
    }
    if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
        origin.generation = generation_in(&environ);
    }
    origin
}

/// The generation whose cgroup `pid` is in (`<root>/gen-N[/...]` in its /proc/PID/cgroup).
fn generation_by_cgroup(pid: Pid, root: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    generation_of_path(root, path)
}

/// The generation of cgroup `path` in start_server's subtree at `root`: `<root>/gen-N[/...]`.
pub fn generation_of_path(root: &str, path: &str) -> Option<u64> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    let first = rest.strip_prefix('/')?.split('/').next()?;
    first.strip_prefix("gen-")?.parse().ok()
}

/// The first `SERVER_STARTER_GENERATION` in a NUL-separated environment, as getenv sees it.
fn generation_in(environ: &[u8]) -> Option<u64> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"SERVER_STARTER_GENERATION="))
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(generation: u64, pid: Pid) -> Worker {
        Worker { generation, pid }
    }

    fn of(generation: Option<u64>, group: Pid) -> Origin {
        Origin {
            generation,
            group,
            session: 1,
        }
    }

    #[test]
    fn only_processes_of_a_gone_or_unknown_generation_are_strays() {
        let mut adopted = Adopted::default();
        let workers = [w(2, 200), w(3, 300)];
        let origins = BTreeMap::from([
            (10, of(Some(2), 1)), // helper of a leaving generation
            (11, of(Some(3), 1)), // helper of the current one
            (12, of(Some(1), 1)), // generation 1 is gone
            (13, of(None, 1)),    // scrubbed its environment
            (14, of(None, 300)),  // ... but is in the current worker's group
        ]);
        let read = std::cell::Cell::new(0);
        let origin = |pid| {
            read.set(read.get() + 1);
            origins[&pid].clone()
        };
        assert_eq!(
            adopted.sort(origins.keys().copied(), &workers, origin),
            vec![12, 13]
        );
        // Generation 2's worker exits: its helper is now a stray; the others are not sent again.
        assert_eq!(
            adopted.sort(origins.keys().copied(), &workers[1..], origin),
            vec![10]
        );
        // Shutdown: everything left is a stray.
        assert_eq!(
            adopted.sort(origins.keys().copied(), &[], origin),
            vec![11, 14]
        );
        assert_eq!(adopted.take_strays().len(), 5);
    }

    #[test]
    fn as_pid_1_an_unknown_origin_is_foreign_until_shutdown() {
        let mut adopted = Adopted::new(true);
        let workers = [w(2, 200)];
        let origins = BTreeMap::from([
            (10, of(Some(1), 1)), // generation 1 is gone: a stray still
            (11, of(None, 1)),    // from `docker exec`, or scrubbed its environment
            (12, of(None, 200)),  // in the worker's group: spared
        ]);
        let origin = |pid| origins[&pid].clone();
        assert_eq!(
            adopted.sort(origins.keys().copied(), &workers, origin),
            [10]
        );
        assert_eq!(adopted.sort(origins.keys().copied(), &[], origin), [12]);
        assert_eq!(adopted.stop_foreign(), [11]);
        assert_eq!(adopted.take_strays().len(), 3);
    }

    #[test]
    fn generations_by_cgroup_path() {
        let root = "/system.slice/app.service";
        let of = |p| generation_of_path(root, p);
        assert_eq!(of("/system.slice/app.service/gen-3"), Some(3));
        assert_eq!(of("/system.slice/app.service/gen-12/slot-1.2"), Some(12));
        assert_eq!(of("/system.slice/app.service/supervisor"), None);
        assert_eq!(of("/system.slice/app.service2/gen-3"), None);
        assert_eq!(of("/system.slice/other.service/gen-3"), None);
        assert_eq!(generation_of_path("/", "/gen-4/slot-0"), Some(4));
    }

    #[test]
    fn the_generation_is_read_as_getenv_would() {
        assert_eq!(
            generation_in(b"A=1\0SERVER_STARTER_GENERATION=7\0SERVER_STARTER_GENERATION=8\0"),
            Some(7)
        );
        assert_eq!(generation_in(b"SERVER_STARTER_GENERATION=x\0"), None);
        assert_eq!(generation_in(b""), None);
    }
}
