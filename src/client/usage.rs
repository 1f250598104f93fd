//! `--status`'s words for what each generation and worker costs and holds (a `status` with
//! `usage`): `12 connections open, 48.0 MiB, 3 processes, 1.25 s CPU`.

use crate::wire::control::{Usage, WorkerInfo};

/// A generation's costs after its line (`: 12 connections open, 48.0 MiB, ...`), or nothing.
pub fn brief(u: &Usage) -> String {
    let mut parts = Vec::new();
    if let Some(n) = u.connections {
        parts.push(format!("{n} connection{} open", plural(n)));
    }
    if let Some(bytes) = u.memory_bytes {
        let source = match u.memory_source.as_deref() {
            Some("pss") => " (PSS)",
            _ => "",
        };
        parts.push(format!("{}{source}", size(bytes)));
    }
    if let Some(n) = u.processes {
        parts.push(format!("{n} process{}", if n == 1 { "" } else { "es" }));
    }
    if let Some(cpu) = u.cpu_seconds {
        parts.push(format!("{cpu:.2} s CPU"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    }
}

/// The workers' costs and cgroups as a table of its own, or nothing when none is known.
pub fn table(workers: &[WorkerInfo]) -> String {
    let known = |w: &&WorkerInfo| w.usage != Usage::default() || w.memory_recycles > 0;
    if !workers.iter().any(|w| known(&w)) {
        return String::new();
    }
    let mut out = String::from("\n  PID      MEMORY       CPU      PROCS CONNS RECYCLED CGROUP\n");
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for w in workers {
        out.push_str(&format!(
            "  {:<8} {:<12} {:<8} {:<5} {:<5} {:<8} {}\n",
            w.pid,
            or_dash(w.usage.memory_bytes.map(size)),
            or_dash(w.usage.cpu_seconds.map(|c| format!("{c:.2}s"))),
            or_dash(w.usage.processes.map(|n| n.to_string())),
            or_dash(w.usage.connections.map(|n| n.to_string())),
            w.memory_recycles,
            w.usage.cgroup.as_deref().unwrap_or("-"),
        ));
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `48.0 MiB`, `1.2 GiB`, `512 KiB`.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..0x10_0000 => format!("{:.0} KiB", b / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", b / 1048576.0),
        _ => format!("{:.1} GiB", b / 1073741824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_in_words() {
        let usage = Usage {
            cgroup: Some("/a/gen-3".into()),
            cpu_seconds: Some(1.25),
            memory_bytes: Some(48 << 20),
            memory_source: Some("cgroup".into()),
            processes: Some(3),
            connections: Some(12),
        };
        assert_eq!(
            brief(&usage),
            ": 12 connections open, 48.0 MiB, 3 processes, 1.25 s CPU"
        );
        let one = Usage {
            memory_bytes: Some(300 << 10),
            memory_source: Some("pss".into()),
            processes: Some(1),
            connections: Some(1),
            ..Usage::default()
        };
        assert_eq!(brief(&one), ": 1 connection open, 300 KiB (PSS), 1 process");
        assert_eq!(brief(&Usage::default()), "");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
