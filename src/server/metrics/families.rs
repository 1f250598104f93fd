//! The metrics start_server exports, named and described as Prometheus' conventions want
//! (`server_starter_` prefix, base units, `_total` counters): what it is and runs
//! ([`Inputs::snapshot`]), what the supervisor and the server counted since start-up (kept across
//! reloads and upgrades in place), and what each live generation costs and holds, read at the
//! scrape ([`Inputs::costs`]).

use super::counters::Counters;
use super::exposition::{Kind, Writer};
use crate::server::probe::costs::Costs;
use crate::supervisor::Tally;
use crate::supervisor::snapshot::{GenerationState, Snapshot, WorkerState};

/// What a scrape shows.
pub struct Inputs<'a> {
    /// start_server's version.
    pub version: &'a str,
    /// When it started, unix seconds.
    pub started_unix: f64,
    /// The supervisor's state.
    pub snapshot: &'a Snapshot,
    /// The supervisor's counts.
    pub tally: &'a Tally,
    /// The server's counts.
    pub counters: &'a Counters,
    /// Log lines dropped since start-up.
    pub log_lines_dropped: u64,
    /// Notifications rejected since start-up.
    pub notify_rejected: u64,
    /// Each live generation's costs.
    pub costs: &'a Costs,
}

/// The metrics text.
pub fn render(i: &Inputs<'_>) -> String {
    let mut w = Writer::new();
    let gauge = |w: &mut Writer, name: &str, help: &str, value: f64| {
        w.metric(name, Kind::Gauge, help, &[(&[], value)]);
    };
    let counter = |w: &mut Writer, name: &str, help: &str, value: u64| {
        w.metric(name, Kind::Counter, help, &[(&[], value as f64)]);
    };
    w.metric(
        "server_starter_info",
        Kind::Gauge,
        "start_server's version, as a label; always 1.",
        &[(&[("version", i.version)], 1.0)],
    );
    gauge(
        &mut w,
        "server_starter_start_time_seconds",
        "When start_server started (kept across upgrades in place), unix seconds.",
        i.started_unix,
    );
    let serving = i
        .snapshot
        .generations
        .iter()
        .rev()
        .find(|g| g.state == GenerationState::Up)
        .map_or(0, |g| g.number);
    gauge(
        &mut w,
        "server_starter_generation",
        "The generation serving now; 0 while none is.",
        serving as f64,
    );
    let in_state = |state| {
        i.snapshot
            .workers
            .iter()
            .filter(|w| w.state == state)
            .count() as f64
    };
    w.metric(
        "server_starter_workers",
        Kind::Gauge,
        "Worker processes by state: starting (not up yet), up, stopping (signalled, waited for).",
        &[
            (&[("state", "starting")], in_state(WorkerState::Starting)),
            (&[("state", "up")], in_state(WorkerState::Up)),
            (&[("state", "stopping")], in_state(WorkerState::Stopping)),
        ],
    );
    gauge(
        &mut w,
        "server_starter_crash_loop",
        "1 while the workers keep dying before they are up, else 0.",
        f64::from(u8::from(i.snapshot.crash_loop)),
    );
    let t = i.tally;
    w.metric(
        "server_starter_reloads_total",
        Kind::Counter,
        "Reloads by how they ended: ok (the new generation came up), failed (it did not start: \
         the old one serves on), rolled_back (it came up, then was rolled back).",
        &[
            (&[("result", "ok")], t.reloads_ok as f64),
            (&[("result", "failed")], t.reloads_failed as f64),
            (&[("result", "rolled_back")], t.reloads_rolled_back as f64),
        ],
    );
    w.histogram(
        "server_starter_reload_duration_seconds",
        "Time from a reload's request to its new generation serving, for the reloads that came \
         up.",
        &[(&[], &t.reload_seconds)],
    );
    counter(
        &mut w,
        "server_starter_worker_starts_total",
        "Worker processes started.",
        t.worker_starts,
    );
    let reasons = t.exits.by_reason();
    let labels: Vec<[(&str, &str); 1]> = reasons.iter().map(|(r, _)| [("reason", *r)]).collect();
    let exits: Vec<(&[(&str, &str)], f64)> = labels
        .iter()
        .zip(reasons)
        .map(|(label, (_, count))| (&label[..], count as f64))
        .collect();
    w.metric(
        "server_starter_worker_exits_total",
        Kind::Counter,
        "Worker processes that exited, by reason: retired (replaced, gone after its signal), \
         stopped (with start_server), failed_start (before it was up), died (while it served).",
        &exits,
    );
    counter(
        &mut w,
        "server_starter_crash_loops_total",
        "Crash loops declared: episodes of workers dying before they are up, 3 or more in a row.",
        t.crash_loops,
    );
    counter(
        &mut w,
        "server_starter_worker_memory_recycles_total",
        "Workers replaced for going past --worker-max-memory.",
        t.memory_recycles.iter().sum(),
    );
    let c = i.counters;
    w.metric(
        "server_starter_upgrades_total",
        Kind::Counter,
        "Upgrades of start_server in place by outcome: ok (the new program runs), refused (the \
         old one runs on), rolled_back (the new one could not take over: the old one runs again).",
        &[
            (&[("result", "ok")], c.upgrades_ok as f64),
            (&[("result", "refused")], c.upgrades_refused as f64),
            (&[("result", "rolled_back")], c.upgrades_rolled_back as f64),
        ],
    );
    counter(
        &mut w,
        "server_starter_log_lines_dropped_total",
        "Log lines start_server could not write (a full disk, a stalled journald or log command).",
        i.log_lines_dropped,
    );
    counter(
        &mut w,
        "server_starter_notify_rejected_total",
        "Datagrams on the workers' notification socket from processes that are neither a worker \
         nor a worker's descendant, dropped.",
        i.notify_rejected,
    );
    generation_families(&mut w, i.costs);
    w.finish()
}

/// Each live generation's CPU time, memory, processes and connections.
fn generation_families(w: &mut Writer, costs: &Costs) {
    let numbers: Vec<String> = costs.generations.keys().map(u64::to_string).collect();
    let sources: Vec<String> = costs
        .generations
        .values()
        .map(|u| u.memory_source.clone().unwrap_or_default())
        .collect();
    let labels: Vec<[(&str, &str); 1]> = numbers
        .iter()
        .map(|n| [("generation", n.as_str())])
        .collect();
    let with_source: Vec<[(&str, &str); 2]> = numbers
        .iter()
        .zip(&sources)
        .map(|(n, s)| [("generation", n.as_str()), ("source", s.as_str())])
        .collect();
    let samples = |value: &dyn Fn(&crate::wire::control::Usage) -> Option<f64>| {
        labels
            .iter()
            .zip(costs.generations.values())
            .filter_map(|(l, u)| Some((&l[..], value(u)?)))
            .collect::<Vec<_>>()
    };
    w.metric(
        "server_starter_generation_cpu_seconds_total",
        Kind::Counter,
        "CPU time used by each live generation's processes (with a cgroup, also by those that \
         exited), seconds.",
        &samples(&|u| u.cpu_seconds),
    );
    let memory: Vec<(&[(&str, &str)], f64)> = with_source
        .iter()
        .zip(costs.generations.values())
        .filter_map(|(l, u)| Some((&l[..], u.memory_bytes? as f64)))
        .collect();
    w.metric(
        "server_starter_generation_memory_bytes",
        Kind::Gauge,
        "Memory of each live generation, bytes: its cgroup's memory.current (source=\"cgroup\"), \
         else the sum of its processes' proportional set sizes (source=\"pss\").",
        &memory,
    );
    w.metric(
        "server_starter_generation_processes",
        Kind::Gauge,
        "Processes of each live generation: its workers and what they started.",
        &samples(&|u| u.processes.map(|p| p as f64)),
    );
    w.metric(
        "server_starter_generation_connections",
        Kind::Gauge,
        "Established connections accepted from start_server's sockets that each live \
         generation's processes hold.",
        &samples(&|u| u.connections.map(|c| c as f64)),
    );
}
