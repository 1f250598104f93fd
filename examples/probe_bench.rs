//! What start_server's on-demand probes cost (bench/connections.py runs it): the accepted
//! connections of the listening socket at fd `LISTEN_FD`, read from sock_diag and from /proc
//! and counted per process, and the CPU time and PSS of the processes, `RUNS` times each.
//! Prints one line per measure: `name median min max` in milliseconds.
//!
//! ```sh
//! probe_bench LISTEN_FD RUNS PID...
//! ```

#[allow(dead_code)]
#[path = "../src/server/cgroup/mod.rs"]
pub mod cgroup_module;
#[allow(dead_code)]
#[path = "../src/server/probe/connections/mod.rs"]
pub mod connections_module;
#[allow(dead_code)]
#[path = "../src/server/metrics/mod.rs"]
pub mod metrics;
#[allow(dead_code)]
#[path = "../src/server/probe/usage.rs"]
pub mod usage_module;

/// The modules' paths in start_server.
mod server {
    pub use super::cgroup_module as cgroup;
    pub mod probe {
        pub use super::super::connections_module as connections;
        pub use super::super::usage_module as usage;
    }
}

use std::os::fd::BorrowedFd;
use std::time::Instant;

use server::probe::connections::{self, Accepted, Listening, Source};
use server::probe::usage;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Option<Vec<i32>> = args.iter().map(|a| a.parse().ok()).collect();
    let Some(numbers) = numbers.filter(|n| n.len() >= 3) else {
        eprintln!("usage: probe_bench LISTEN_FD RUNS PID...");
        std::process::exit(2);
    };
    let (fd, runs, pids) = (numbers[0], numbers[1].max(1) as usize, &numbers[2..]);
    // SAFETY: the caller passes an open listening socket at this fd, open for our whole life.
    let listener = unsafe { BorrowedFd::borrow_raw(fd) };
    let listeners = match Listening::of(listener) {
        Ok(Some(l)) => vec![l],
        other => {
            eprintln!("probe_bench: fd {fd} is not a listening socket: {other:?}");
            std::process::exit(2);
        }
    };

    let mut counts = Vec::new();
    for source in [Source::SockDiag, Source::Proc] {
        let name = format!("read_{source:?}").to_lowercase();
        let mut found = 0;
        measure(&name, runs, || {
            found = Accepted::read(&listeners, source).expect("read").len();
        });
        counts.push((name, found));
    }
    let accepted = Accepted::read(&listeners, Source::SockDiag).expect("read");
    let mut total = 0;
    measure("held_by_all_pids_at_once", runs, || {
        total = accepted.held_by(pids);
    });
    let mut each_sum = 0;
    measure("held_by_each_pid", runs, || {
        each_sum = pids.iter().map(|p| accepted.held_by(&[*p])).sum();
    });
    // A status request: one read, one look at each worker's descriptors, then each worker's
    // count and its generation's (here: one).
    for source in [Source::SockDiag, Source::Proc] {
        measure(
            &format!("status_connections_{source:?}").to_lowercase(),
            runs,
            || {
                let accepted = Accepted::read(&listeners, source).expect("read");
                let each = accepted.held_by_each(pids);
                let per_worker: usize = each.iter().map(|(_, held)| held.len()).sum();
                let generation = connections::distinct(each.iter().map(|(_, h)| h.as_slice()));
                assert_eq!(per_worker, generation);
            },
        );
    }
    let mut memory = 0;
    measure("usage_of_all_pids", runs, || {
        memory = usage::of_processes(pids).memory_bytes;
    });
    measure("usage_of_each_pid", runs, || {
        for pid in pids {
            usage::of_processes(&[*pid]);
        }
    });
    // A scrape's text: the probes above, then the families written for two generations and
    // the workers' states, with a histogram.
    let mut text = 0;
    measure("render_metrics_text", runs, || {
        text = render(pids.len()).len();
    });
    for (name, count) in &counts {
        println!("count {name} {count}");
    }
    println!("count held_by_all_pids_at_once {total}");
    println!("count held_by_each_pid_summed {each_sum}");
    println!("count pss_bytes_of_all_pids {memory}");
    println!("count metrics_text_bytes {text}");
}

fn render(workers: usize) -> String {
    use metrics::exposition::{Histogram, Kind, Writer};
    let mut w = Writer::new();
    let version = env!("CARGO_PKG_VERSION");
    w.metric(
        "server_starter_info",
        Kind::Gauge,
        "Version.",
        &[(&[("version", version)], 1.0)],
    );
    w.metric(
        "server_starter_generation",
        Kind::Gauge,
        "Current generation.",
        &[(&[], 2.0)],
    );
    w.metric(
        "server_starter_workers",
        Kind::Gauge,
        "Workers by state.",
        &[
            (&[("state", "running")], workers as f64),
            (&[("state", "retiring")], 0.0),
        ],
    );
    w.metric(
        "server_starter_reloads_total",
        Kind::Counter,
        "Reloads by result.",
        &[(&[("result", "ok")], 1.0), (&[("result", "failed")], 0.0)],
    );
    let mut h = Histogram::new(&[0.001, 0.01, 0.1, 1.0, 10.0, 60.0]);
    h.observe(0.0027);
    w.histogram(
        "server_starter_reload_duration_seconds",
        "Reload time.",
        &[(&[], &h)],
    );
    for family in [
        "cpu_seconds_total",
        "memory_bytes",
        "processes",
        "connections",
    ] {
        let name = format!("server_starter_generation_{family}");
        let kind = if family.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        w.metric(
            &name,
            kind,
            "Per generation.",
            &[(&[("generation", "1")], 1.0), (&[("generation", "2")], 2.0)],
        );
    }
    w.finish()
}

/// Runs `work` `runs` times; prints the median, min and max in milliseconds.
fn measure(name: &str, runs: usize, mut work: impl FnMut()) {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "time {name} {:.3} {:.3} {:.3}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
