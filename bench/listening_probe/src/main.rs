//! `listening_probe reload SS_PID [TIMES]`: HUP a running start_server TIMES times; each time,
//! how long after the new worker appears the probe sees it listening, how, and what the scans
//! cost while it waited.
//! `listening_probe cost SS_PID [SCANS]`: the cost of one scan of start_server's current
//! generation: a scan that finds (stops at the first), a full survey, and a full scan that finds
//! nothing (what every scan costs while a generation is not yet listening).

// The module's API is wider than what this tool calls.
#![allow(dead_code)]

#[path = "../../../src/server/probe"]
mod probe {
    pub mod listening;
}

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use probe::listening::{self, Inodes};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| {
        args.get(i)
            .map_or(Some(default), |a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let Some(ss) = args.get(1).and_then(|p| p.parse::<i32>().ok()) else {
        usage()
    };
    match args.first().map(String::as_str) {
        Some("reload") => reload(
            ss,
            number(2, 5),
            Duration::from_millis(number(3, 10_000) as u64),
        ),
        Some("cost") => cost(ss, number(2, 1000)),
        Some("parts") => {
            let mut all = children(ss);
            all.extend(all.clone().iter().flat_map(|&c| children(c)));
            parts(&all, 1000)
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: listening_probe reload SS_PID [TIMES [GIVE_UP_MS]] | cost SS_PID [SCANS] | \
         parts SS_PID"
    );
    std::process::exit(2)
}

/// Bound on every wait.
const PATIENCE: Duration = Duration::from_secs(30);

fn reload(ss: i32, times: usize, give_up: Duration) {
    let passed = passed(ss);
    println!("start_server {ss}: passed socket inodes {passed:?}");
    for round in 1..=times {
        let old: BTreeSet<i32> = children(ss).into_iter().collect();
        let hup = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ss),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("signal start_server");
        let new = loop {
            let new: Vec<i32> = children(ss)
                .into_iter()
                .filter(|c| !old.contains(c))
                .collect();
            if !new.is_empty() {
                break new;
            }
            assert!(hup.elapsed() < PATIENCE, "no new worker after SIGHUP");
            std::thread::sleep(Duration::from_micros(200));
        };
        let spawned = Instant::now();
        let cpu_before = cpu();
        let mut scans = 0u32;
        let found = loop {
            scans += 1;
            if let Some(found) = listening::find(&new, &passed) {
                break Some(found);
            }
            if spawned.elapsed() > give_up {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let detected = spawned.elapsed();
        let cpu = cpu() - cpu_before;
        let survey = listening::survey(&new, &passed);
        let hows: BTreeSet<String> = survey
            .listening
            .iter()
            .map(|l| format!("{:?}", l.how).replace(", waiting: true", ", waiting"))
            .collect();
        match found {
            Some(first) => println!(
                "round {round}: worker {new:?} seen {:.1} ms after HUP; listening {:.1} ms after \
                 it appeared ({scans} scans, {:.0} µs CPU each); first: {first}; now {} of {} \
                 processes: {hows:?}",
                ms(spawned - hup),
                ms(detected),
                cpu.as_secs_f64() * 1e6 / f64::from(scans),
                survey
                    .listening
                    .iter()
                    .map(|l| l.pid)
                    .collect::<BTreeSet<_>>()
                    .len(),
                survey.processes,
            ),
            None => println!(
                "round {round}: worker {new:?} not seen listening within {give_up:?} ({scans} \
                 scans, {:.0} µs CPU each, {} processes)",
                cpu.as_secs_f64() * 1e6 / f64::from(scans),
                survey.processes
            ),
        }
        // The old generation leaves once the new one is promoted.
        let start = Instant::now();
        while children(ss).iter().any(|c| old.contains(c)) {
            assert!(start.elapsed() < PATIENCE, "the old generation stays");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn cost(ss: i32, scans: usize) {
    let roots = children(ss);
    let passed = passed(ss);
    let survey = listening::survey(&roots, &passed);
    println!(
        "start_server {ss}: workers {roots:?}, {} processes, {} listening ways",
        survey.processes,
        survey.listening.len()
    );
    let nothing = Inodes::from([u64::MAX]);
    let kinds: [(&str, &dyn Fn() -> usize); 3] = [
        ("find (stops at the first)", &|| {
            usize::from(listening::find(&roots, &passed).is_some())
        }),
        ("survey (everything)", &|| {
            listening::survey(&roots, &passed).listening.len()
        }),
        ("full scan finding nothing", &|| {
            listening::survey(&roots, &nothing).processes
        }),
    ];
    for (what, scan) in kinds {
        let wall = Instant::now();
        let cpu_before = cpu();
        let mut total = 0;
        for _ in 0..scans {
            total += scan();
        }
        let cpu = cpu() - cpu_before;
        let each = |d: Duration| d.as_secs_f64() * 1e6 / scans as f64;
        println!(
            "{what}: {:.0} µs wall, {:.0} µs CPU per scan ({scans} scans, {total})",
            each(wall.elapsed()),
            each(cpu)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// This process's CPU time, user and system.
fn cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let time =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// The sockets start_server passes: those it holds that are listening TCP sockets or UDP
/// sockets (its control and notify sockets are unix sockets).
fn passed(ss: i32) -> Inodes {
    let mut inet = Inodes::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = table.starts_with("udp") || fields.get(3) == Some(&"0A");
            if let (true, Some(inode)) = (listening, fields.get(9).and_then(|i| i.parse().ok())) {
                inet.insert(inode);
            }
        }
    }
    let held: Inodes = fs::read_dir(format!("/proc/{ss}/fd"))
        .expect("start_server's fds")
        .flatten()
        .filter_map(|e| {
            let link = fs::read_link(e.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    held.intersection(&inet).copied().collect()
}

/// What each kind of /proc read a scan makes costs, per process of the generation.
fn parts(pids: &[i32], n: u32) {
    let time = |what: &str, f: &dyn Fn(i32)| {
        let t = Instant::now();
        for _ in 0..n {
            for &p in pids {
                f(p)
            }
        }
        println!(
            "{what}: {:.1} µs per process",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n) / pids.len() as f64
        );
    };
    time("task dir", &|p| {
        let _ = fs::read_dir(format!("/proc/{p}/task")).map(|d| d.count());
    });
    time("children", &|p| {
        let _ = fs::read_to_string(format!("/proc/{p}/task/{p}/children"));
    });
    time("syscall", &|p| {
        let _ = fs::read_to_string(format!("/proc/{p}/task/{p}/syscall"));
    });
    time("readlink fd 3", &|p| {
        let _ = fs::read_link(format!("/proc/{p}/task/{p}/fd/3"));
    });
    time("fd dir + readlinks", &|p| {
        if let Ok(d) = fs::read_dir(format!("/proc/{p}/fd")) {
            for e in d.flatten() {
                let _ = fs::read_link(e.path());
            }
        }
    });
    time("fd dir only", &|p| {
        let _ = fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.count());
    });
    time("stat", &|p| {
        let _ = fs::read_to_string(format!("/proc/{p}/stat"));
    });
    time("wchan", &|p| {
        let _ = fs::read_to_string(format!("/proc/{p}/wchan"));
    });
}
