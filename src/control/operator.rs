//! `--status`, `--reload` and `--check`: one request on the control socket of a running
//! start_server, found by `--control` or the default derived from `--pid-file`. Nothing of
//! start_server's own set-up runs (no configuration check, no sockets): a probe is cheap.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::cli::Cli;
use crate::control::protocol::{self, Reply, Request, Status};
use crate::error::{Error, Result};

/// How long `--status` and `--check` wait for the reply.
const QUICK: Duration = Duration::from_secs(10);

/// The control socket's path.
fn socket_path(cli: &Cli) -> Result<PathBuf> {
    if let Some(path) = &cli.control {
        return Ok(path.clone());
    }
    let runtime_directory = std::env::var("RUNTIME_DIRECTORY").ok();
    protocol::default_path(cli.pid_file.as_deref(), runtime_directory.as_deref()).ok_or_else(|| {
        Error::usage(
            "no control socket to talk to: give --control=PATH or the server's --pid-file=FILE",
        )
    })
}

/// Sends `request` and reads the one-line reply (no limit with `timeout` = `None`).
fn ask(cli: &Cli, request: &Request, timeout: Option<Duration>) -> Result<Reply> {
    let path = socket_path(cli)?;
    let shown = path.display();
    let failed = |what: &str, e: std::io::Error| {
        Error::runtime(format!("{what} control socket {shown}: {e}"))
    };
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        Error::runtime(format!(
            "cannot connect to the control socket {shown}: {e}: is start_server running with \
             this --control (or --pid-file)?"
        ))
    })?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(Some(QUICK)))
        .map_err(|e| failed("cannot set up the", e))?;
    let mut line = serde_json::to_vec(request)
        .map_err(|e| Error::runtime(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| failed("cannot write to the", e))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| failed("no reply from the", e))?;
    if answer.is_empty() {
        return Err(Error::runtime(format!(
            "the control socket {shown} closed without a reply (start_server is exiting?)"
        )));
    }
    serde_json::from_str(&answer)
        .map_err(|e| Error::runtime(format!("bad reply from the control socket {shown}: {e}")))
}

fn status_of(cli: &Cli) -> Result<Status> {
    let reply = ask(cli, &Request::Status, Some(QUICK))?;
    match (reply.ok, reply.status) {
        (true, Some(status)) => Ok(status),
        _ => Err(Error::runtime(format!(
            "status failed: {}",
            reply.error.unwrap_or_default()
        ))),
    }
}

/// `--status [--json]`.
pub fn status(cli: &Cli) -> Result<()> {
    let status = status_of(cli)?;
    let text = if cli.json {
        serde_json::to_string_pretty(&status)
            .map_err(|e| Error::runtime(format!("cannot encode the status: {e}")))?
    } else {
        render(&status)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| Error::runtime(format!("cannot write the status: {e}")))
}

/// `--reload`: waits for the outcome; an error (exit 1) when the new generation failed.
pub fn reload(cli: &Cli) -> Result<()> {
    let reply = ask(cli, &Request::Reload, None)?;
    match reply {
        Reply {
            ok: true,
            generation,
            ..
        } => {
            crate::runtime::logging::print(&format!(
                "reloaded: generation {} is up",
                generation.map_or("?".to_string(), |g| g.to_string())
            ));
            Ok(())
        }
        Reply { error, .. } => Err(Error::runtime(format!(
            "reload failed: {}",
            error.unwrap_or_default()
        ))),
    }
}

/// `--upgrade` over the control socket: waits (bounded) for the outcome, from the new program
/// once it runs, or from the old one with the reason it refused.
pub fn upgrade(cli: &Cli, limit: Duration) -> Result<()> {
    match ask(cli, &Request::Upgrade, Some(limit))? {
        Reply {
            ok: true, version, ..
        } => {
            crate::runtime::logging::print(&format!(
                "start_server upgraded: start_server {} runs",
                version.unwrap_or_else(|| "(unknown version)".into())
            ));
            Ok(())
        }
        Reply { error, .. } => Err(Error::runtime(format!(
            "upgrade failed: {}",
            error.unwrap_or_default()
        ))),
    }
}

/// Whether a control socket is there to talk to: `--control`, or the default one beside
/// `--pid-file` (or in `RUNTIME_DIRECTORY`) when it exists.
pub fn reachable(cli: &Cli) -> bool {
    use std::os::unix::fs::FileTypeExt;
    cli.control.is_some()
        || socket_path(cli).is_ok_and(|path| {
            std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        })
}

/// `--check`: exit 0 only when healthy, with one line saying why or why not.
pub fn check(cli: &Cli) -> Result<()> {
    let status = status_of(cli)?;
    match status.healthy() {
        Ok(generation) => {
            crate::runtime::logging::print(&format!("ok: generation {generation} is up"));
            Ok(())
        }
        Err(why) => Err(Error::runtime(format!("unhealthy: {why}"))),
    }
}

/// The human summary, in the manner of `systemctl status`.
pub fn render(s: &Status) -> String {
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
            .map_or(String::new(), |w| format!(": {w}"));
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
            "  {:<4} {:<9} {} ago\n",
            g.number,
            g.state,
            age(g.since_ago)
        ));
    }
    out.push_str("\n  PID      SLOT GEN  STATE     RESTARTS STATUS\n");
    for w in &s.workers {
        let mut status = w.status.clone().unwrap_or_default();
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
