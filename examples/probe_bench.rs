//! What start_server's connections probe costs, step by step (bench/connections.py runs it,
//! beside what a whole `status` and a metrics scrape of the real start_server cost): the
//! accepted connections of the listening socket at fd `LISTEN_FD`, read from sock_diag and from
//! /proc and counted per process, `RUNS` times each. Prints one line per measure: `name median
//! min max` in milliseconds.
//!
//! ```sh
//! probe_bench LISTEN_FD RUNS PID...
//! ```

#[allow(dead_code)]
#[path = "../src/server/probe/connections/mod.rs"]
pub mod connections;

use std::os::fd::BorrowedFd;
use std::time::Instant;

use connections::{Accepted, Listening, Source};

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
    for (name, count) in &counts {
        println!("count {name} {count}");
    }
    println!("count held_by_all_pids_at_once {total}");
    println!("count held_by_each_pid_summed {each_sum}");
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
