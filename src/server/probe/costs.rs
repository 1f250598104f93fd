//! What each generation and worker costs and holds, read when asked (a `status` with `usage`, a
//! metrics scrape, `--worker-max-memory`'s check), never on a timer of its own: from their
//! cgroups where they have them ([`usage::of_cgroup`]), else from /proc for the processes
//! attributed to them ([`usage::of_processes`]: a worker and its descendants; a generation, its
//! workers' and what they left behind that is spared while it runs), and the connections
//! accepted from start_server's sockets that those processes hold ([`connections`]).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{BorrowedFd, RawFd};

use super::connections::{self, Accepted, Listening};
use super::usage::{self, MemorySource};
use crate::server::cgroup::tree::Cgroups;
use crate::server::process::strays::Adopted;
use crate::supervisor::Worker;
use crate::vocab::Pid;
use crate::wire::control::Usage;

/// What was read, by generation and by worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Costs {
    pub generations: BTreeMap<u64, Usage>,
    pub workers: BTreeMap<Pid, Usage>,
}

/// What the probes look at.
pub struct Scope<'a> {
    /// The live workers.
    pub workers: &'a [Worker],
    /// Their cgroups, if they have them.
    pub cgroups: Option<&'a Cgroups>,
    /// The processes workers left behind, spared while their generation runs.
    pub strays: &'a Adopted,
    /// The listening sockets' fds in start_server, whose accepted connections are counted.
    pub listeners: &'a [RawFd],
}

impl Scope<'_> {
    /// Reads every worker's and generation's costs and connections now.
    pub fn measure(&self) -> Costs {
        let mut costs = Costs::default();
        let mut members: BTreeMap<Key, Vec<Pid>> = BTreeMap::new();
        for worker in self.workers {
            let (usage, pids) = self.worker(worker.pid);
            costs.workers.insert(worker.pid, usage);
            members.insert(Key::Worker(worker.pid), pids);
        }
        let generations: BTreeSet<u64> = self.workers.iter().map(|w| w.generation).collect();
        for generation in generations {
            let (usage, pids) = self.generation(generation, &members, &costs.workers);
            costs.generations.insert(generation, usage);
            members.insert(Key::Generation(generation), pids);
        }
        self.count_connections(&mut costs, &members);
        costs
    }

    /// A worker's memory, bytes (its cgroup's, else its processes' PSS).
    pub fn memory_of(&self, pid: Pid) -> u64 {
        match self.cgroups.and_then(|c| c.of_worker(pid)) {
            Some(cgroup) => usage::of_cgroup(cgroup).map_or(0, |u| u.memory_bytes),
            None => usage::pss_bytes(&with_descendants(&[pid])),
        }
    }

    fn worker(&self, pid: Pid) -> (Usage, Vec<Pid>) {
        match self.cgroups.and_then(|c| c.of_worker(pid)) {
            Some(cgroup) => match usage::of_cgroup(cgroup) {
                Ok(read) => (
                    usage_of(read, Some(cgroup.path())),
                    cgroup.pids().unwrap_or_default(),
                ),
                Err(_) => (Usage::default(), Vec::new()),
            },
            None => {
                let pids = with_descendants(&[pid]);
                (usage_of(usage::of_processes(&pids), None), pids)
            }
        }
    }

    /// A generation's costs: its cgroup's, else its workers' (already read: each process is
    /// one worker's or a descendant of one) plus those of what they left behind that it keeps.
    fn generation(
        &self,
        generation: u64,
        members: &BTreeMap<Key, Vec<Pid>>,
        workers: &BTreeMap<Pid, Usage>,
    ) -> (Usage, Vec<Pid>) {
        if let Some(cgroup) = self.cgroups.and_then(|c| c.of_generation(generation)) {
            // A generation of one worker in it: read already.
            let own = self.workers.iter().filter(|w| w.generation == generation);
            if let Some(usage) = own
                .filter_map(|w| workers.get(&w.pid))
                .find(|u| u.cgroup.as_deref() == Some(cgroup.path()))
            {
                let pids = cgroup.pids().unwrap_or_default();
                return (usage.clone(), pids);
            }
            if let Ok(read) = usage::of_cgroup(&cgroup) {
                return (
                    usage_of(read, Some(cgroup.path())),
                    cgroup.pids().unwrap_or_default(),
                );
            }
        }
        let spared: Vec<Pid> = self.strays.spared_of(generation).collect();
        let spared = with_descendants(&spared);
        let mut total = usage_of(usage::of_processes(&spared), None);
        let mut pids = spared;
        for worker in self.workers.iter().filter(|w| w.generation == generation) {
            pids.extend(members.get(&Key::Worker(worker.pid)).into_iter().flatten());
            if let Some(usage) = workers.get(&worker.pid) {
                add(&mut total, usage);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        (total, pids)
    }

    /// Each one's connections, from one read of the accepted sockets and one look at each
    /// process's descriptors.
    fn count_connections(&self, costs: &mut Costs, members: &BTreeMap<Key, Vec<Pid>>) {
        let listeners: Vec<Listening> = self
            .listeners
            .iter()
            .filter_map(|&fd| {
                // SAFETY: the spawner's sockets, open for start_server's whole life.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                Listening::of(fd).ok().flatten()
            })
            .collect();
        let Ok((accepted, _)) = Accepted::read_preferred(&listeners) else {
            return;
        };
        let all: BTreeSet<Pid> = members.values().flatten().copied().collect();
        let all: Vec<Pid> = all.into_iter().collect();
        let held: BTreeMap<Pid, Vec<u64>> = accepted.held_by_each(&all).into_iter().collect();
        for (key, pids) in members {
            let count =
                connections::distinct(pids.iter().filter_map(|p| held.get(p).map(Vec::as_slice)));
            let usage = match key {
                Key::Worker(pid) => costs.workers.get_mut(pid),
                Key::Generation(g) => costs.generations.get_mut(g),
            };
            if let Some(usage) = usage {
                usage.connections = Some(count);
            }
        }
    }
}

/// Whose members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Worker(Pid),
    Generation(u64),
}

fn usage_of(read: usage::Usage, cgroup: Option<&str>) -> Usage {
    Usage {
        cgroup: cgroup.map(str::to_string),
        cpu_seconds: Some(read.cpu_seconds),
        memory_bytes: Some(read.memory_bytes),
        memory_source: Some(
            match read.memory_source {
                MemorySource::Cgroup => "cgroup",
                MemorySource::Pss => "pss",
            }
            .into(),
        ),
        processes: Some(read.processes),
        connections: None,
    }
}

/// Adds `more` (read from /proc) to `total`.
fn add(total: &mut Usage, more: &Usage) {
    total.cpu_seconds = Some(total.cpu_seconds.unwrap_or(0.0) + more.cpu_seconds.unwrap_or(0.0));
    total.memory_bytes = Some(total.memory_bytes.unwrap_or(0) + more.memory_bytes.unwrap_or(0));
    total.processes = Some(total.processes.unwrap_or(0) + more.processes.unwrap_or(0));
}

/// `pids` and all their descendants (from /proc/PID/task/TID/children), each once.
pub fn with_descendants(pids: &[Pid]) -> Vec<Pid> {
    let mut seen: BTreeSet<Pid> = BTreeSet::new();
    let mut stack: Vec<Pid> = pids.to_vec();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<Pid>().ok()),
                );
            }
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_of_a_process_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        let start = std::time::Instant::now();
        let found = loop {
            let found = with_descendants(&[pid]);
            if found.len() == 3 || start.elapsed().as_secs() > 30 {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        for p in &found {
            // SAFETY: kill(2) on this test's own child and its children.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        let _ = child.wait();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.contains(&pid));
    }
}
