//! What /proc says about a process: whether it lives, its children, environment, fds, status.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Running: exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at the state too.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A process's pid in the innermost namespace it belongs to (`NSpid:` of /proc/PID/status).
pub fn pid_inside(pid: i32) -> Option<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Gone from /proc: exited and reaped (a zombie would still be listed).
pub fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Seconds since process `pid` started, from /proc.
pub fn age(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let started: f64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(uptime - started / ticks)
}

/// The children of `pid` that are zombies.
pub fn zombies_among_children(pid: i32) -> Vec<i32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .filter(|c: &i32| {
            fs::read_to_string(format!("/proc/{c}/stat"))
                .map(|s| s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .collect()
}

/// The environment of a process, from /proc, as `NAME=VALUE` entries.
/// The environment `pid` was started with.
pub fn environ(pid: i32) -> BTreeSet<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).expect("read /proc/PID/environ");
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// fd numbers open in a process, from /proc.
/// The fds `pid` has open.
pub fn open_fds(pid: i32) -> BTreeSet<i32> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// A field of /proc/PID/status (`SigIgn`, ...), trimmed.
pub fn proc_status_field(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .expect("field")
}
