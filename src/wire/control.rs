//! The control socket's protocol: one JSON request per line, one JSON reply per line. Shared by
//! the server side (`server/control/`) and the clients (`--status`, `--reload`,
//! `--check`), so both read and write the same types.
//!
//! Times: every moment is given twice, as wall-clock unix seconds (`*_unix`, fractional) and as
//! a monotonic age in seconds (`*_ago`), which stays right when the wall clock jumps.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A request: `{"command":"status"}` (`"usage":true` adds what each generation and worker costs
/// and holds), `{"command":"reload"}`, `{"command":"stop"}`, `{"command":"workers","count":4}`,
/// `{"command":"upgrade"}`, `{"command":"metrics"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The whole state ([`Status`]); with `usage`, also each generation's and worker's CPU
    /// time, memory, processes and connections, read now (it costs more: see [`Usage`]).
    Status {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        usage: bool,
    },
    /// A graceful reload; the reply comes once the new generation is up or has failed.
    Reload,
    /// Stop start_server, as SIGTERM does.
    Stop,
    /// Run this many copies of the worker per generation.
    Workers { count: usize },
    /// Upgrade start_server in place (as SIGUSR2); the reply comes from the new program once it
    /// runs (with its `version`), or from the old one when it refused.
    Upgrade,
    /// The metrics, in the Prometheus text format.
    Metrics,
}

/// A reply: `ok` always, `error` when it is false, `status` for a status request, `generation`
/// and `reason` for a reload, `version` for an upgrade.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, in the common style (what went wrong: what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The generation a reload started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// How long that generation baked before it took over (`--bake`), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baked: Option<f64>,
    /// The answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The version that runs after an upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The answer to `metrics`: the Prometheus text format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Reply {
    /// A reply saying it went well.
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// A reply saying why not.
    pub fn error(why: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(why.into()),
            ..Reply::default()
        }
    }
}

/// What `status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// start_server's pid.
    pub pid: u32,
    /// The version of the program running now (it changes with an upgrade in place).
    pub version: String,
    /// When start_server started, in unix seconds (kept across upgrades).
    pub started_unix: f64,
    /// Seconds since then.
    pub uptime: f64,
    /// The listening sockets.
    pub sockets: Vec<SocketInfo>,
    /// Every live generation, oldest first.
    pub generations: Vec<GenerationInfo>,
    /// Every worker process, by generation then slot.
    pub workers: Vec<WorkerInfo>,
    /// The last reload, if any.
    pub last_reload: Option<ReloadInfo>,
    /// Backoff in force after failed starts.
    pub backoff: Option<BackoffInfo>,
    /// The current generation's workers keep dying before they are up.
    pub crash_loop: bool,
    /// A terminating signal was received.
    pub stopping: bool,
    /// While stopping with `--shutdown-delay`: seconds until the workers get their signal.
    pub workers_signalled_in: Option<f64>,
    /// Log lines that could not be written since start-up.
    pub log_lines_dropped: u64,
    /// The last start that failed, even of the first generation (a server before this field
    /// sends none).
    #[serde(default)]
    pub last_failure: Option<FailureInfo>,
    /// Failed starts in a row now (0 once a generation came up).
    #[serde(default)]
    pub failures_in_a_row: u32,
}

/// The last start that failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureInfo {
    /// The generation that failed.
    pub generation: u64,
    /// Why.
    pub reason: String,
    /// Seconds since.
    pub ago: f64,
}

/// A listening socket held for the workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// Its `SERVER_STARTER_PORT` key.
    pub key: String,
    /// Its address as the operator wrote it or systemd described it.
    pub address: String,
    /// The fd the workers find it at.
    pub fd: i32,
    /// `bound` by start_server, `inherited` from a systemd socket unit, or `stored` (taken back
    /// from systemd's file descriptor store).
    pub origin: String,
}

/// A live generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// Its number (`SERVER_STARTER_GENERATION`).
    pub number: u64,
    /// `starting`, `up`, `baking` (up beside the serving one until its bake ends, `--bake`) or
    /// `retiring`.
    pub state: String,
    /// When it entered that state, in unix seconds.
    pub since_unix: f64,
    /// Seconds since then.
    pub since_ago: f64,
    /// While `baking`: seconds until the bake ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_left: Option<f64>,
    /// Its cgroup, and what it costs and holds.
    #[serde(flatten)]
    pub usage: Usage,
}

/// A worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its pid.
    pub pid: i32,
    /// Its slot (`SERVER_STARTER_WORKER`).
    pub slot: usize,
    /// Its generation.
    pub generation: u64,
    /// `starting`, `up` or `stopping`.
    pub state: String,
    /// Its last `STATUS=`.
    pub status: Option<String>,
    /// How many times its slot was restarted in this generation.
    pub restarts: u32,
    /// How the workers before it in its slot ended: `exit 3`, `signal 9`.
    pub predecessors: Vec<String>,
    /// Workers killed by `--worker-watchdog` since start-up (all slots).
    pub watchdog_kills: u32,
    /// Workers of its slot replaced for their memory (`--worker-max-memory`) since start-up.
    #[serde(default)]
    pub memory_recycles: u64,
    /// Its cgroup, and what it costs and holds.
    #[serde(flatten)]
    pub usage: Usage,
}

/// A generation's or a worker's cgroup and, in a `status` with `usage`, what it costs and holds,
/// read when asked: from its cgroup (`cpu.stat`, `memory.current`, `cgroup.procs`), else from
/// /proc for its processes (the worker and its descendants; for a generation, its workers' and
/// what they left behind). Null where not asked, or not known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Its cgroup's path (as /proc/PID/cgroup shows it), when workers get cgroups.
    pub cgroup: Option<String>,
    /// CPU time its processes used, seconds (with a cgroup, also those that exited).
    pub cpu_seconds: Option<f64>,
    /// Memory it uses, bytes.
    pub memory_bytes: Option<u64>,
    /// Where `memory_bytes` comes from: `cgroup` (`memory.current`) or `pss` (the sum of its
    /// processes' proportional set sizes).
    pub memory_source: Option<String>,
    /// Its processes.
    pub processes: Option<usize>,
    /// The established connections accepted from start_server's sockets that its processes
    /// hold (each once).
    pub connections: Option<usize>,
}

/// The last reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadInfo {
    /// `signal`, `control`, `file_change` or `auto_restart`.
    pub trigger: String,
    /// The path that changed, for `file_change`.
    pub path: Option<String>,
    /// Its generation.
    pub generation: u64,
    /// When start_server started, in unix seconds (kept across upgrades).
    pub started_unix: f64,
    /// Seconds since then.
    pub started_ago: f64,
    /// Seconds it took, once finished.
    pub duration: Option<f64>,
    /// `running`, `up`, `failed` or `rolled_back` (it failed during its bake, `--bake`).
    pub result: String,
    /// Why it failed or was rolled back.
    pub reason: Option<String>,
    /// Generations tried for it (failed ones, then the one that came up).
    #[serde(default)]
    pub attempts: u32,
}

/// Backoff in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackoffInfo {
    /// Failed starts in a row.
    pub failures_in_a_row: u32,
    /// Seconds until the next attempt.
    pub next_attempt_in: Option<f64>,
}

impl Status {
    /// The generation that serves, if one does.
    pub fn serving(&self) -> Option<&GenerationInfo> {
        self.generations.iter().rev().find(|g| g.state == "up")
    }

    /// Whether it is healthy in `--check`'s sense: a generation serves (its number) and
    /// start_server is not shutting down. A newer generation that fails to start, or keeps
    /// dying, does not change that while the old one serves: see [`Status::deploy_failing`].
    pub fn healthy(&self) -> std::result::Result<u64, Unhealthy> {
        if self.stopping {
            return Err(Unhealthy::Stopping);
        }
        match self.serving() {
            Some(g) => Ok(g.number),
            None if self.crash_loop => Err(Unhealthy::CrashLoop),
            None => Err(Unhealthy::NothingUp),
        }
    }

    /// Why the last deploy is failing, if it is: a reload whose new generation did not come
    /// up or was rolled back during its bake, or starts failing in a row (a crash loop, a
    /// backoff) while the old generation serves.
    /// `--check --strict` fails on it.
    pub fn deploy_failing(&self) -> Option<String> {
        if let Some(r) = self
            .last_reload
            .as_ref()
            .filter(|r| r.result == "rolled_back")
        {
            return Some(format!(
                "the reload to generation {} was rolled back: {}",
                r.generation,
                r.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        if let Some(r) = self.last_reload.as_ref().filter(|r| r.result == "failed") {
            let attempts = match r.attempts {
                0 | 1 => String::new(),
                n => format!(" after {n} attempts"),
            };
            return Some(format!(
                "the reload to generation {} failed{attempts}: {}",
                r.generation,
                r.reason.as_deref().unwrap_or("no reason given")
            ));
        }
        if self.failures_in_a_row > 0 {
            let why = self.last_failure.as_ref().map_or(String::new(), |f| {
                format!(": generation {}: {}", f.generation, f.reason)
            });
            return Some(format!(
                "{} failed starts in a row{}{why}",
                self.failures_in_a_row,
                if self.crash_loop { " (crash loop)" } else { "" }
            ));
        }
        None
    }
}

/// Why `--check` fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// A terminating signal was received.
    Stopping,
    /// Nothing serves, and the workers keep dying before they are up.
    CrashLoop,
    /// No generation has come up yet.
    NothingUp,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Stopping => f.write_str("start_server is stopping"),
            Unhealthy::CrashLoop => f.write_str("nothing serves: the workers are in a crash loop"),
            Unhealthy::NothingUp => f.write_str("no generation is up yet"),
        }
    }
}

/// Where the control socket is when `--control` is not given: beside the pid file
/// (`PIDFILE.control`), else in systemd's `RUNTIME_DIRECTORY` (its first entry) as
/// `start_server.control`; `None` when neither is known.
pub fn default_path(pid_file: Option<&Path>, runtime_directory: Option<&str>) -> Option<PathBuf> {
    if let Some(pid_file) = pid_file {
        let mut path = pid_file.as_os_str().to_os_string();
        path.push(".control");
        return Some(PathBuf::from(path));
    }
    let dir = runtime_directory?.split(':').next()?;
    (!dir.is_empty()).then(|| Path::new(dir).join("start_server.control"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_hostile_ones_do_not() {
        let parse = |s: &str| serde_json::from_str::<Request>(s).ok();
        assert_eq!(
            parse(r#"{"command":"status"}"#),
            Some(Request::Status { usage: false })
        );
        assert_eq!(
            parse(r#"{"command":"status","usage":true}"#),
            Some(Request::Status { usage: true })
        );
        assert_eq!(
            serde_json::to_string(&Request::Status { usage: false }).unwrap(),
            r#"{"command":"status"}"#
        );
        assert_eq!(parse(r#"{"command":"metrics"}"#), Some(Request::Metrics));
        assert_eq!(parse(r#"{"command":"status","usag":true}"#), None);
        assert_eq!(
            parse(r#"{"command":"workers","count":3}"#),
            Some(Request::Workers { count: 3 })
        );
        assert_eq!(parse(r#"{"command":"upgrade"}"#), Some(Request::Upgrade));
        assert_eq!(parse(r#"{"command":"bogus"}"#), None);
        assert_eq!(parse(r#"{"command":"workers","count":-1}"#), None);
        assert_eq!(parse("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn default_path_prefers_the_pid_file() {
        assert_eq!(
            default_path(Some(Path::new("/run/a.pid")), Some("/run/x")),
            Some(PathBuf::from("/run/a.pid.control"))
        );
        assert_eq!(
            default_path(None, Some("/run/x:/run/y")),
            Some(PathBuf::from("/run/x/start_server.control"))
        );
        assert_eq!(default_path(None, None), None);
    }
}
