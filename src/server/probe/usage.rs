//! What a generation or a worker costs, read on demand: from its cgroup where it has one
//! (`cpu.stat`, `memory.current`, `cgroup.procs`), else from /proc for a set of processes
//! (`/proc/PID/stat` CPU times, `/proc/PID/smaps_rollup` PSS). [`MemorySource`] says which
//! memory figure it is: the two are not the same thing (a cgroup's charge includes the page
//! cache its processes brought in and kernel memory; PSS shares each shared page among the
//! processes mapping it).

use std::fs;

use serde::Serialize;

use crate::server::cgroup::Cgroup;

/// Where a memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// The cgroup's `memory.current` (memory controller enabled).
    Cgroup,
    /// The sum of the processes' proportional set sizes (`smaps_rollup`'s `Pss`).
    Pss,
}

/// What a set of processes costs now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
    /// Memory used, bytes.
    pub memory_bytes: u64,
    /// Where `memory_bytes` comes from.
    pub memory_source: MemorySource,
    /// How many processes.
    pub processes: usize,
}

/// From a cgroup: its CPU time (every process that ever ran in it, exited ones too) and
/// `memory.current`; where the memory controller is not enabled for it, the PSS of its members.
pub fn of_cgroup(cgroup: &Cgroup) -> std::io::Result<Usage> {
    let stats = cgroup.stats()?;
    let (memory_bytes, memory_source) = match stats.memory_bytes {
        Some(bytes) => (bytes, MemorySource::Cgroup),
        None => (pss_bytes(&cgroup.pids()?), MemorySource::Pss),
    };
    Ok(Usage {
        cpu_seconds: stats.cpu_usec as f64 / 1e6,
        memory_bytes,
        memory_source,
        processes: stats.processes,
    })
}

/// From /proc, for processes that have no cgroup of their own: the CPU time of those alive
/// (their own and that of the children they reaped), their PSS. A process that exits meanwhile
/// is left out.
pub fn of_processes(pids: &[i32]) -> Usage {
    let ticks = clock_ticks();
    let mut cpu_ticks = 0u64;
    let mut processes = 0;
    for &pid in pids {
        if let Some(t) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| cpu_ticks_of_stat(&s))
        {
            cpu_ticks += t;
            processes += 1;
        }
    }
    Usage {
        cpu_seconds: cpu_ticks as f64 / ticks,
        memory_bytes: pss_bytes(pids),
        memory_source: MemorySource::Pss,
        processes,
    }
}

/// The sum of the PSS of `pids`, bytes (processes whose `smaps_rollup` cannot be read, gone or
/// kernel threads, count 0).
pub fn pss_bytes(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| pss_kib(&text))
        .sum::<u64>()
        * 1024
}

/// `Pss:` of a `smaps_rollup`, KiB.
pub fn pss_kib(smaps_rollup: &str) -> Option<u64> {
    smaps_rollup.lines().find_map(|line| {
        let rest = line.strip_prefix("Pss:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// utime + stime + cutime + cstime of a `/proc/PID/stat`, clock ticks. The command name (field
/// 2) may hold spaces and parentheses: fields are counted after its last `)`.
pub fn cpu_ticks_of_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: state is field 3; utime, stime, cutime, cstime are fields 14 to 17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut sum = 0u64;
    for field in fields.get(11..15)? {
        // cutime and cstime are signed in the kernel's format, never negative in practice.
        sum += field.parse::<i64>().ok()?.max(0) as u64;
    }
    Some(sum)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    120 30 7 3 20 0 1 0 1000 10000000 200 18446744073709551615";
        assert_eq!(cpu_ticks_of_stat(stat), Some(120 + 30 + 7 + 3));
        assert_eq!(cpu_ticks_of_stat("4242 (short) S 1 2"), None);
        assert_eq!(cpu_ticks_of_stat("no parenthesis"), None);
    }

    #[test]
    fn pss_of_a_smaps_rollup() {
        let text = "55d0c6a3e000-7ffc8a5fd000 ---p 00000000 00:00 0                  [rollup]\n\
                    Rss:                2948 kB\n\
                    Pss:                 717 kB\n\
                    Pss_Dirty:           180 kB\n\
                    Pss_Anon:            180 kB\n\
                    Shared_Clean:       2592 kB\n";
        assert_eq!(pss_kib(text), Some(717));
        assert_eq!(pss_kib("Rss: 12 kB\n"), None);
    }

    /// The files of a cgroup whose memory controller is enabled (no cgroup2 hierarchy with one
    /// is at hand where the tests run: the real-cgroup tests cover the rest).
    #[test]
    fn cgroup_with_the_memory_controller() {
        let dir = std::env::temp_dir().join(format!("usage-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("slot-0")).unwrap();
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        fs::write(dir.join("memory.current"), "52428800\n").unwrap();
        fs::write(dir.join("cgroup.procs"), "").unwrap();
        fs::write(dir.join("slot-0/cgroup.procs"), "101\n102\n").unwrap();
        let cgroup = crate::server::cgroup::Delegation::at(dir.clone(), "/gen-1".into()).cgroup();
        let usage = of_cgroup(&cgroup).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_seconds: 2.5,
                memory_bytes: 52428800,
                memory_source: MemorySource::Cgroup,
                processes: 2,
            }
        );
        assert_eq!(
            serde_json::to_value(usage).unwrap()["memory_source"],
            "cgroup"
        );
    }

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id() as i32;
        // Burn a little CPU so that at least one tick is counted.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let usage = of_processes(&[me, i32::MAX]);
        assert_eq!(usage.processes, 1);
        assert!(usage.cpu_seconds > 0.0, "{usage:?}");
        assert!(usage.memory_bytes > 0, "{usage:?}");
        assert_eq!(usage.memory_source, MemorySource::Pss);
    }
}
