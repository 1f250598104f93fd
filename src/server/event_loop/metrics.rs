//! What the generations and workers cost and hold, and the metrics: read when asked (a `status`
//! with `usage`, `metrics`, a scrape of `--metrics-listen`) or at `--worker-max-memory`'s
//! cadence, never otherwise.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::EventLoop;
use crate::server::log::loss;
use crate::server::metrics::families::{self, Inputs};
use crate::server::probe::costs::{Costs, Scope};
use crate::supervisor::Worker;
use crate::supervisor::snapshot::WorkerState;
use crate::wire::control::Status;

impl EventLoop {
    /// What the probes look at: `workers`, their cgroups, the strays spared, the sockets.
    fn measure(&self, workers: &[Worker]) -> Costs {
        let listeners = self.parts.spawner.listener_fds();
        Scope {
            workers,
            cgroups: self.parts.cgroups.as_ref(),
            strays: &self.parts.anew.strays,
            listeners: &listeners,
        }
        .measure()
    }

    /// Fills in the cgroups of `status`, and with `usage` what each costs and holds.
    pub(super) fn add_usage(&self, status: &mut Status, usage: bool) {
        if usage {
            let costs = self.measure(&self.supervisor.workers());
            for g in &mut status.generations {
                g.usage = costs
                    .generations
                    .get(&g.number)
                    .cloned()
                    .unwrap_or_default();
            }
            for w in &mut status.workers {
                w.usage = costs.workers.get(&w.pid).cloned().unwrap_or_default();
            }
        } else if let Some(cgroups) = &self.parts.cgroups {
            for g in &mut status.generations {
                g.usage.cgroup = cgroups
                    .of_generation(g.number)
                    .map(|c| c.path().to_string());
            }
            for w in &mut status.workers {
                w.usage.cgroup = cgroups.of_worker(w.pid).map(|c| c.path().to_string());
            }
        }
    }

    /// Log lines dropped since start-up, the images before this one included.
    pub(super) fn log_lines_dropped(&self) -> u64 {
        self.parts.counters.log_lines_dropped(loss::dropped_total())
    }

    /// The metrics text, its generations' costs read now.
    pub(super) fn metrics_text(&self) -> String {
        let now = Instant::now();
        let snapshot = self.supervisor.snapshot(now);
        let costs = self.measure(&self.supervisor.workers());
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let started = wall - now.duration_since(self.parts.facts.started).as_secs_f64();
        let version = crate::server::upgrade::version::version();
        families::render(&Inputs {
            version: &version,
            started_unix: started,
            snapshot: &snapshot,
            tally: self.supervisor.tally(),
            counters: &self.parts.counters,
            log_lines_dropped: self.log_lines_dropped(),
            notify_rejected: (self.parts.counters)
                .notify_rejected(self.parts.workers_notify.rejected()),
            costs: &costs,
        })
    }

    /// Answers the metrics endpoint's requests that are ready (the text made once, if asked).
    pub(super) fn answer_scrapes(&mut self) {
        let Some(mut endpoint) = self.parts.metrics.take() else {
            return;
        };
        let mut text: Option<String> = None;
        endpoint.serve(&mut || text.get_or_insert_with(|| self.metrics_text()).clone());
        self.parts.metrics = Some(endpoint);
    }

    /// `--worker-max-memory`: the serving workers past the limit are replaced.
    pub(super) fn check_memory(&mut self) {
        let Some(limit) = self.parts.anew.memory.as_ref().map(|m| m.limit) else {
            return;
        };
        let now = Instant::now();
        let up: Vec<Worker> = (self.supervisor.snapshot(now).workers.iter())
            .filter(|w| w.state == WorkerState::Up)
            .map(|w| Worker {
                generation: w.generation,
                pid: w.pid,
            })
            .collect();
        let listeners = [];
        let scope = Scope {
            workers: &up,
            cgroups: self.parts.cgroups.as_ref(),
            strays: &self.parts.anew.strays,
            listeners: &listeners,
        };
        let over: Vec<(Worker, u64)> = up
            .iter()
            .map(|w| (*w, scope.memory_of(w.pid)))
            .filter(|(_, bytes)| *bytes > limit)
            .collect();
        for (worker, bytes) in over {
            let next = self.supervisor.over_memory(worker.pid, bytes, limit, now);
            self.actions.extend(next);
        }
    }
}
