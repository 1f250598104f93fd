//! `--status`, `--reload` and `--check`: one request on the control socket of a running
//! start_server, found by `--control` or the default derived from `--pid-file`. Nothing of
//! start_server's own set-up runs (no configuration check, no sockets): a probe is cheap.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::ask::ask;
use crate::client::{process, render, say};
use crate::config::cli::Cli;
use crate::error::{Error, Result};
use crate::wire::control::{self as protocol, Reply, Request, Status};

/// How long `--status` and `--check` wait for the reply by default.
const QUICK: Duration = Duration::from_secs(5);

/// How long `--reload` waits for the new generation by default: systemd's own default for a
/// reload command.
const RELOAD: Duration = Duration::from_secs(90);

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

/// Sends `request` and reads the one-line reply within `--timeout` (else `default`). With
/// `--pid-file`, the process that file names (confirmed) must be the one answering.
fn request(cli: &Cli, request: &Request, default: Duration) -> Result<Reply> {
    let path = socket_path(cli)?;
    let pid = match cli.pid_file.as_deref() {
        Some(pid_file) => Some(process::running_server(pid_file)?.1),
        None => None,
    };
    ask(&path, request, cli.timeout.unwrap_or(default), pid)
        .map_err(|e| Error::runtime(e.to_string()).caused_by(e))
}

fn status_of(cli: &Cli, usage: bool) -> Result<Status> {
    let mut reply = request(cli, &Request::Status { usage }, QUICK)?;
    // A start_server from before `usage` (not upgraded in place yet) refuses the field.
    if usage && !reply.ok && reply.error.as_deref().is_some_and(|e| e.contains("usage")) {
        reply = request(cli, &Request::Status { usage: false }, QUICK)?;
    }
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
    let status = status_of(cli, true)?;
    let text = if cli.json {
        serde_json::to_string_pretty(&status)
            .map_err(|e| Error::runtime(format!("cannot encode the status: {e}")))?
    } else {
        render::summary(&status)
    };
    print(&format!("{text}\n"), "the status")
}

/// `--reload`: waits for the outcome; an error (exit 1) when the new generation failed.
pub fn reload(cli: &Cli) -> Result<()> {
    let reply = request(cli, &Request::Reload, RELOAD)?;
    match reply {
        Reply {
            ok: true,
            generation,
            baked,
            ..
        } => {
            say(&format!(
                "reloaded: generation {} is up{}",
                generation.map_or("?".to_string(), |g| g.to_string()),
                baked.map_or(String::new(), |s| format!(" (baked {s:.1}s)"))
            ));
            Ok(())
        }
        // A rollback says so itself (`rolled back: generation N failed during the bake: ...`).
        Reply {
            error: Some(why), ..
        } if why.starts_with("rolled back: ") => Err(Error::runtime(why)),
        Reply { error, .. } => Err(Error::runtime(format!(
            "reload failed: {}",
            error.unwrap_or_default()
        ))),
    }
}

/// `--upgrade` over the control socket: waits (bounded) for the outcome, from the new program
/// once it runs, or from the old one with the reason it refused.
pub fn upgrade(cli: &Cli, limit: Duration) -> Result<()> {
    match request(cli, &Request::Upgrade, limit)? {
        Reply {
            ok: true, version, ..
        } => {
            say(&format!(
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

/// `--check`: exit 0 while a generation serves (readiness: the old one serving during a failing
/// deploy counts), with one line saying why or why not; with `--strict`, a failing deploy fails
/// too.
pub fn check(cli: &Cli) -> Result<()> {
    let status = status_of(cli, false)?;
    let generation = status
        .healthy()
        .map_err(|why| Error::runtime(format!("unhealthy: {why}")))?;
    match status.deploy_failing() {
        Some(why) if cli.strict => Err(Error::runtime(format!(
            "unhealthy: generation {generation} serves, but {why}"
        ))),
        Some(why) => {
            say(&format!("ok: generation {generation} is up (but {why})"));
            Ok(())
        }
        None => {
            say(&format!("ok: generation {generation} is up"));
            Ok(())
        }
    }
}

/// `--metrics`: the metrics, in the Prometheus text format, on stdout.
pub fn metrics(cli: &Cli) -> Result<()> {
    let reply = request(cli, &Request::Metrics, QUICK)?;
    let text = match (reply.ok, reply.metrics) {
        (true, Some(text)) => text,
        _ => {
            return Err(Error::runtime(format!(
                "metrics failed: {}",
                reply.error.unwrap_or_default()
            )));
        }
    };
    print(&text, "the metrics")
}

/// Writes `text` on stdout. A reader that stopped reading (`| grep -q`, `| head`) has what it
/// wanted: that is no failure, so a pipeline under `set -o pipefail` succeeds.
fn print(text: &str, what: &str) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::runtime(format!("cannot write {what}: {e}")))
        }
        _ => Ok(()),
    }
}
