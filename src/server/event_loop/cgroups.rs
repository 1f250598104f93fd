//! The loop's side of the generations' cgroups: each worker started in its cgroup, SIGKILL to a
//! worker as its cgroup's kill, the generations without a worker drained once children exited,
//! and what is left of them all at exit.

use std::time::Instant;

use nix::sys::signal::Signal;

use super::EventLoop;
use crate::server::cgroup::tree::Target;
use crate::server::process::spawn::SpawnError;
use crate::supervisor::Tunables;
use crate::vocab::Pid;

impl EventLoop {
    /// Starts generation `generation`'s worker in `slot` (named to it when `Some`), in its
    /// cgroup when generations have them.
    pub(super) fn spawn_worker(
        &mut self,
        generation: u64,
        slot: Option<usize>,
    ) -> (Tunables, Result<Pid, SpawnError>) {
        let copies = self.supervisor.slots() > 1;
        let target = (self.parts.cgroups.as_mut())
            .and_then(|c| c.target(generation, slot.unwrap_or(0), copies));
        let (tunables, result) =
            (self.parts.spawner).spawn_into(generation, slot, target.as_ref().map(Target::fds));
        if let (Ok(pid), Some(target), Some(cgroups)) =
            (&result, target, self.parts.cgroups.as_mut())
        {
            cgroups.placed(*pid, generation, target);
        }
        (tunables, result)
    }

    /// The supervisor's signal went to `pids`.
    pub(super) fn signalled(&mut self, pids: &[Pid], signal: Signal) {
        if let Some(cgroups) = &mut self.parts.cgroups {
            cgroups.signalled(pids, signal, Instant::now());
        }
    }

    /// Children exited: generations with no worker left are drained, empty cgroups removed.
    pub(super) fn sweep_cgroups(&mut self) {
        if let Some(cgroups) = &mut self.parts.cgroups {
            cgroups.sweep(&self.supervisor.workers(), Instant::now());
        }
    }

    /// At exit: what workers left behind goes (TERM, then KILL after a grace), in and out of the
    /// generations' cgroups; whether something had to be killed.
    pub(super) fn stop_remains(&mut self) -> bool {
        let ours = self.not_workers();
        let anew = &mut self.parts.anew;
        let in_cgroups =
            (self.parts.cgroups.as_mut()).is_some_and(|c| c.stop_all(&mut anew.signals));
        // What is outside the generations' cgroups, or everything without them.
        anew.strays.stop_all(&mut anew.signals, &ours) || in_cgroups
    }
}
