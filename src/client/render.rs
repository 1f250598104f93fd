//! `--status`'s human summary of a running start_server's state, in the manner of
//! `systemctl status`.

use crate::client::usage;
use crate::vocab::text::printable;
use crate::wire::control::Status;

/// The human summary, in the manner of `systemctl status`.
pub fn summary(s: &Status) -> String {
    let mut out = String::new();
    let health = match s.healthy() {
        Ok(generation) => format!("healthy (generation {generation} is up)"),
        Err(why) => format!("UNHEALTHY ({why})"),
    };
    out.push_str(&format!(
        "start_server {} (pid {}): {health}\n",
        s.version, s.pid
    ));
    out.push_str(&format!("  uptime: {}\n", age(s.uptime)));
    for socket in &s.sockets {
        out.push_str(&format!(
            "  socket: {} at {} (fd {}, {})\n",
            socket.key, socket.address, socket.fd, socket.origin
        ));
    }
    if let Some(r) = &s.last_reload {
        let path = r.path.as_deref().map_or(String::new(), |p| format!(" {p}"));
        let took = r
            .duration
            .map_or(String::new(), |d| format!(", took {d:.2}s"));
        let reason = r
            .reason
            .as_deref()
            .map_or(String::new(), |w| format!(": {}", printable(w)));
        out.push_str(&format!(
            "  last reload: {} ago by {}{path}, generation {}, {}{reason}{took}\n",
            age(r.started_ago),
            r.trigger,
            r.generation,
            r.result
        ));
    }
    if let Some(b) = &s.backoff {
        let next = b
            .next_attempt_in
            .map_or(String::new(), |n| format!(", next attempt in {n:.1}s"));
        out.push_str(&format!(
            "  backoff: {} failed starts in a row{next}\n",
            b.failures_in_a_row
        ));
    }
    if s.crash_loop {
        out.push_str("  CRASH LOOP: the workers keep dying before they are up\n");
    }
    if let Some(kills) = s
        .workers
        .iter()
        .map(|w| w.watchdog_kills)
        .max()
        .filter(|&k| k > 0)
    {
        out.push_str(&format!("  hung workers killed by the watchdog: {kills}\n"));
    }
    if let Some(delay) = s.workers_signalled_in {
        out.push_str(&format!(
            "  stopping: workers get their signal in {delay:.1}s\n"
        ));
    }
    if s.log_lines_dropped > 0 {
        out.push_str(&format!("  log lines dropped: {}\n", s.log_lines_dropped));
    }
    out.push_str("\n  GEN  STATE     SINCE\n");
    for g in &s.generations {
        out.push_str(&format!(
            "  {:<4} {:<9} {} ago{}\n",
            g.number,
            g.state,
            age(g.since_ago),
            usage::brief(&g.usage)
        ));
    }
    out.push_str("\n  PID      SLOT GEN  STATE     RESTARTS STATUS\n");
    for w in &s.workers {
        // Escaped again: the text comes from a server, whose version may be another.
        let mut status = printable(w.status.as_deref().unwrap_or_default()).into_owned();
        if !w.predecessors.is_empty() {
            status.push_str(&format!(" (before: {})", w.predecessors.join(", ")));
        }
        out.push_str(&format!(
            "  {:<8} {:<4} {:<4} {:<9} {:<8} {}\n",
            w.pid,
            w.slot,
            w.generation,
            w.state,
            w.restarts,
            status.trim()
        ));
    }
    out.push_str(&usage::table(&s.workers));
    out.trim_end().to_string()
}

/// `3d 4h`, `5m 2s`, `1.2s`.
fn age(seconds: f64) -> String {
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m {}s", whole / 60, whole % 60),
        3600..86400 => format!("{}h {}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d {}h", whole / 86400, whole % 86400 / 3600),
    }
}
