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
    if let Some(why) = s.deploy_failing() {
        out.push_str(&format!("  DEPLOY FAILING: {}\n", printable(&why)));
    }
    out.push_str(&format!("  uptime: {}\n", age(s.uptime)));
    for socket in &s.sockets {
        // The key says it all when it is the address (as a bound --port=HOST:PORT is).
        let at = if socket.key == socket.address {
            String::new()
        } else {
            format!(" at {}", socket.address)
        };
        out.push_str(&format!(
            "  socket: {}{at} (fd {}, {})\n",
            socket.key, socket.fd, socket.origin
        ));
    }
    if let Some(r) = &s.last_reload {
        let path = r.path.as_deref().map_or(String::new(), |p| format!(" {p}"));
        let took = r
            .duration
            .map_or(String::new(), |d| format!(", took {}", took(d)));
        let reason = r
            .reason
            .as_deref()
            .map_or(String::new(), |w| format!(": {}", printable(w)));
        let attempts = match r.attempts {
            0 | 1 => String::new(),
            n => format!(" after {n} attempts"),
        };
        out.push_str(&format!(
            "  last reload: {} ago by {}{path}, generation {}, {}{attempts}{reason}{took}\n",
            age(r.started_ago),
            r.trigger,
            r.generation,
            r.result
        ));
    }
    if let Some(f) = s.last_failure.as_ref().filter(|_| s.failures_in_a_row > 0) {
        out.push_str(&format!(
            "  last failure: generation {}, {} ago: {}\n",
            f.generation,
            age(f.ago),
            printable(&f.reason)
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
        let left = g
            .bake_left
            .map_or(String::new(), |l| format!(" ({l:.1}s of bake left)"));
        out.push_str(&format!(
            "  {:<4} {:<9} {} ago{left}{}\n",
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

/// How long something took: `2.7ms` below a second, `1.25s` above.
fn took(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2}s")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::{GenerationInfo, ReloadInfo, SocketInfo};

    fn serving() -> Status {
        Status {
            pid: 7,
            version: "0.1.0".into(),
            generations: vec![GenerationInfo {
                number: 3,
                state: "up".into(),
                since_unix: 0.0,
                since_ago: 5.0,
                bake_left: None,
                usage: Default::default(),
            }],
            sockets: vec![
                SocketInfo {
                    key: "127.0.0.1:8080".into(),
                    address: "127.0.0.1:8080".into(),
                    fd: 3,
                    origin: "bound".into(),
                },
                SocketInfo {
                    key: "8081".into(),
                    address: "0.0.0.0:8081".into(),
                    fd: 4,
                    origin: "bound".into(),
                },
            ],
            ..Status::default()
        }
    }

    #[test]
    fn each_socket_is_said_once_and_short_reloads_in_milliseconds() {
        let mut status = serving();
        status.last_reload = Some(ReloadInfo {
            trigger: "signal".into(),
            path: None,
            generation: 3,
            started_unix: 0.0,
            started_ago: 2.0,
            duration: Some(0.0027),
            result: "up".into(),
            reason: None,
            attempts: 1,
        });
        let text = summary(&status);
        assert!(
            text.contains("socket: 127.0.0.1:8080 (fd 3, bound)\n"),
            "{text}"
        );
        assert!(
            text.contains("socket: 8081 at 0.0.0.0:8081 (fd 4, bound)"),
            "{text}"
        );
        assert!(text.contains("took 2.7ms"), "{text}");
        assert!(!text.contains("DEPLOY FAILING"), "{text}");
    }

    #[test]
    fn a_failing_deploy_is_said_apart_from_health() {
        let mut status = serving();
        status.failures_in_a_row = 3;
        status.crash_loop = true;
        status.last_failure = Some(crate::wire::control::FailureInfo {
            generation: 6,
            reason: "exit status:256 (exit code 1)".into(),
            ago: 1.0,
        });
        assert_eq!(status.healthy(), Ok(3), "the old generation serves");
        let why = status.deploy_failing().unwrap();
        assert!(
            why.contains("3 failed starts in a row (crash loop)"),
            "{why}"
        );
        let text = summary(&status);
        assert!(
            text.starts_with("start_server 0.1.0 (pid 7): healthy"),
            "{text}"
        );
        assert!(text.contains("DEPLOY FAILING"), "{text}");
        assert!(text.contains("last failure: generation 6"), "{text}");
        status.generations.clear();
        assert!(status.healthy().is_err(), "nothing serves");
    }
}
