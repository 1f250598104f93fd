//! The command line, described once: help, man page, completions and the compatibility rewriting
//! of single-dash long options are all derived from [`Cli`].

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::config::getopt;

/// A superdaemon for hot-deploying server programs.
///
/// Binds the listening sockets, runs the server program (the worker) with those sockets open,
/// and on SIGHUP starts a new worker, retiring the old one only once the new one is up.
/// The sockets are described to the worker in SERVER_STARTER_PORT (KEY=FD;...) and the
/// generation in SERVER_STARTER_GENERATION.
#[derive(Debug, Parser)]
#[command(
    name = "start_server",
    version,
    infer_long_args = true,
    args_override_self = true,
    override_usage = "start_server [OPTIONS] -- PROGRAM [ARGS...]\n       \
                      start_server --restart --pid-file=FILE --status-file=FILE\n       \
                      start_server --stop --pid-file=FILE\n       \
                      start_server --upgrade --pid-file=FILE\n       \
                      start_server --status [--json] | --reload | --check | --metrics  (--control=PATH | --pid-file=FILE)",
    after_help = "Examples:\n  \
        start_server --port=8080 -- plackup -s Starlet app.psgi\n  \
        start_server --port=127.0.0.1:80 --port=[::1]:80 --path=/run/app.sock -- ./server\n  \
        kill -HUP $(cat app.pid)    # graceful restart",
    after_long_help = AFTER_LONG_HELP
)]
pub struct Cli {
    /// TCP port to listen on: PORT (IPv4 0.0.0.0), HOST:PORT or [IPV6]:PORT; 'u' before PORT
    /// for UDP; '=FD' after it to place the socket at that fd in the worker. Repeatable.
    #[arg(long, value_name = "[HOST:]PORT[=FD]", help_heading = SOCKETS)]
    pub port: Vec<String>,

    /// Unix stream socket to listen on (a stale socket file is replaced; the file is removed on
    /// exit). Repeatable.
    #[arg(long, value_name = "PATH", help_heading = SOCKETS)]
    pub path: Vec<PathBuf>,

    /// Listen backlog [default: SOMAXCONN].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..), help_heading = SOCKETS)]
    pub backlog: Option<i32>,

    /// Directory the worker runs in.
    #[arg(long, value_name = "DIR", help_heading = WORKERS)]
    pub dir: Option<PathBuf>,

    /// Seconds a new worker must stay alive to count as started; also the least time between
    /// two spawn attempts.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds, help_heading = TIMING)]
    pub interval: Duration,

    /// Signal sent to the old workers once a new generation has started.
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", help_heading = WORKERS)]
    pub signal_on_hup: String,

    /// Signal sent to the workers when start_server receives SIGTERM.
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", help_heading = WORKERS)]
    pub signal_on_term: String,

    /// Write start_server's pid to FILE (locked while it runs, removed on exit).
    #[arg(long, value_name = "FILE", help_heading = FILES)]
    pub pid_file: Option<PathBuf>,

    /// Keep the list of live generations (GEN:PID lines) in FILE.
    #[arg(long, value_name = "FILE", help_heading = FILES)]
    pub status_file: Option<PathBuf>,

    /// Daemontools-style directory of environment variables for the worker, re-read at every
    /// restart: a file NAME sets NAME to its first line, an empty file removes NAME. Also read
    /// for ENABLE_AUTO_RESTART, AUTO_RESTART_INTERVAL and KILL_OLD_DELAY.
    #[arg(long, value_name = "DIR", env = "ENVDIR", help_heading = WORKERS)]
    pub envdir: Option<PathBuf>,

    /// Append start_server's and the workers' output to FILE, or pipe it to a command with
    /// '| COMMAND'.
    #[arg(long, value_name = "FILE|'| COMMAND'", help_heading = FILES)]
    pub log_file: Option<String>,

    /// Run in the background (needs --log-file).
    #[arg(long, help_heading = FILES)]
    pub daemonize: bool,

    /// Restart the worker periodically [env: ENABLE_AUTO_RESTART].
    #[arg(long, help_heading = TIMING)]
    pub enable_auto_restart: bool,

    /// Seconds between automatic restarts [env: AUTO_RESTART_INTERVAL] [default: 360].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = TIMING)]
    pub auto_restart_interval: Option<Duration>,

    /// Seconds to wait after a new generation started before signalling the old one
    /// [env: KILL_OLD_DELAY] [default: 0, or 5 with auto-restart].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = TIMING)]
    pub kill_old_delay: Option<Duration>,

    /// Seconds a new worker has to send READY=1 on its NOTIFY_SOCKET; a worker silent that long
    /// failed to start and is stopped [default: off, a silent worker is judged by --interval].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = WORKERS)]
    pub ready_timeout: Option<Duration>,

    /// What else than READY=1 counts a new worker as started: 'listening', once it or a process
    /// it started waits on a passed socket (seen in /proc); 'notify': nothing (else --interval).
    #[arg(long, value_name = "HOW", default_value = "notify", value_parser = ["notify", "listening"], hide_possible_values = true, help_heading = WORKERS)]
    pub ready: String,

    /// Seconds the old generation serves on beside a new one that is up before it is signalled;
    /// a new worker that exits or misses --worker-watchdog meanwhile rolls it back (see man page).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_seconds, help_heading = TIMING)]
    pub bake: Duration,

    /// Send SIGKILL to old workers still alive this many seconds after their signal (and, at
    /// shutdown, to any worker) [default: off, wait for them].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = TIMING)]
    pub kill_old_timeout: Option<Duration>,

    /// After 3 failed starts in a row, wait longer before each new attempt (doubling from
    /// --interval), up to this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds, help_heading = TIMING)]
    pub max_restart_delay: Duration,

    /// On TERM or INT, keep the workers serving this many seconds before signalling them (while
    /// a load balancer stops sending requests); a second TERM or INT stops them at once.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = parse_seconds, help_heading = TIMING)]
    pub shutdown_delay: Duration,

    /// Copies of the program per generation, all with the same sockets; with more than one,
    /// each gets SERVER_STARTER_WORKER=0..N-1 (its slot, kept by its successors). A generation is
    /// up when every copy is; a copy that dies is restarted alone.
    #[arg(long, value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..), help_heading = WORKERS)]
    pub workers: u16,

    /// Reload one slot at a time, with at most M workers beyond --workers alive (old ones still
    /// exiting included), instead of every copy at once.
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u16).range(1..), help_heading = WORKERS)]
    pub max_extra: Option<u16>,

    /// Each worker gets WATCHDOG_USEC and WATCHDOG_PID and must send WATCHDOG=1 to
    /// NOTIFY_SOCKET at least every SECONDS (from its start); one that stops is sent TERM, KILL
    /// after --kill-old-timeout (or 5 seconds), and replaced.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = WORKERS)]
    pub worker_watchdog: Option<Duration>,

    /// Do not also describe the sockets to workers with LISTEN_FDS, LISTEN_PID and
    /// LISTEN_FDNAMES (the systemd convention); SERVER_STARTER_PORT only.
    #[arg(long, help_heading = SOCKETS)]
    pub no_listen_fds: bool,

    /// Control socket (JSON lines, mode 0600) for --status, --reload, --check and programs
    /// [default: PID-FILE.control with --pid-file, else $RUNTIME_DIRECTORY/start_server.control
    /// when systemd sets RUNTIME_DIRECTORY, else none].
    #[arg(long, value_name = "PATH", help_heading = CONTROL)]
    pub control: Option<PathBuf>,

    /// Reload (as SIGHUP) when this file or directory changes, 200 ms after the last change;
    /// Kubernetes ConfigMap and Secret volume updates included. Repeatable.
    #[arg(long, value_name = "PATH", help_heading = CONTROL)]
    pub reload_on_change: Vec<PathBuf>,

    /// A cgroup for each generation (and, with --workers, for each copy), where start_server
    /// may manage its own: under systemd with Delegate=yes, or a writable cgroup2 directory of
    /// its own (a container's). What a worker leaves behind then stays in its generation's
    /// cgroup, which is killed once the generation is retired. 'auto' says once why not where it
    /// cannot; 'off' never tries.
    #[arg(long, value_name = "auto|off", default_value = "auto", value_parser = parse_cgroups,
          action = clap::ArgAction::Set, help_heading = WORKERS)]
    pub cgroups: bool,

    /// Replace a worker whose memory goes past SIZE (512M, 2G: K, M, G and T are powers of
    /// 1024), checked every 5 seconds: its slot's new copy starts first (within --max-extra, else
    /// one at a time), and the old one gets --signal-on-hup once the new one is up; with one
    /// worker per generation, a new generation replaces it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = WORKERS)]
    pub worker_max_memory: Option<u64>,

    /// Serve the metrics (the Prometheus text format) at GET /metrics on ADDR over HTTP:
    /// 127.0.0.1:9100, [::1]:9100, or a unix socket path (mode 0600).
    #[arg(long, value_name = "ADDR", help_heading = CONTROL)]
    pub metrics_listen: Option<String>,

    /// Print the running start_server's state (found by --control or --pid-file) and exit;
    /// --status=FILE is --status-file=FILE, as in the original.
    #[arg(long, conflicts_with_all = ["stop", "restart", "reload", "check"], help_heading = CLIENT)]
    pub status: bool,

    /// With --status: print the raw JSON reply instead of the summary.
    #[arg(long, help_heading = CLIENT)]
    pub json: bool,

    /// Reload the running start_server (found by --control or --pid-file) and wait: exit 0
    /// once the new generation is up, 1 if it failed to start (the old one keeps serving).
    #[arg(long, conflicts_with_all = ["stop", "restart", "check"], help_heading = CLIENT)]
    pub reload: bool,

    /// Health check (Kubernetes exec probe, Docker HEALTHCHECK): exit 0 while the running
    /// start_server (found by --control or --pid-file) has a generation up, even while a newer
    /// one fails to start (see --strict).
    #[arg(long, conflicts_with_all = ["stop", "restart"], help_heading = CLIENT)]
    pub check: bool,

    /// With --check: also fail while the last deploy is failing (a reload whose new generation
    /// did not come up, failed starts in a row), even if the old generation serves.
    #[arg(long, requires = "check", help_heading = CLIENT)]
    pub strict: bool,
    /// Print the running start_server's metrics (found by --control or --pid-file) in the
    /// Prometheus text format, and exit.
    #[arg(long, conflicts_with_all = ["stop", "restart", "reload", "check", "status"], help_heading = CLIENT)]
    pub metrics: bool,

    /// Ask the running start_server (found by --pid-file) for a graceful restart and wait until
    /// the new generation is the only one in --status-file.
    #[arg(long, conflicts_with = "stop", help_heading = CLIENT)]
    pub restart: bool,

    /// Stop the running start_server (found by --pid-file) and wait until it has exited.
    #[arg(long, help_heading = CLIENT)]
    pub stop: bool,

    /// Upgrade the running start_server (found by --pid-file) in place: it replaces its own
    /// program with the binary now at its path, keeping its pid, sockets and workers. Waits for
    /// the outcome: exit 0 once the new program runs, 1 with the reason if it refused.
    #[arg(long, conflicts_with_all = ["stop", "restart"], help_heading = CLIENT)]
    pub upgrade: bool,

    /// How long a client command (--stop, --restart, --reload, --upgrade, --status, --check,
    /// --metrics) waits before it gives up [default: 5 for --status, --check and --metrics, 30
    /// for --upgrade, 90 for the others].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = CLIENT)]
    pub timeout: Option<Duration>,

    /// Check that this binary can take over from a running start_server given the same
    /// options: print its version and the upgrade state formats it reads, exit 0 (2 if the
    /// options are not valid for it). Run by start_server before an upgrade.
    #[arg(long, hide = true, conflicts_with_all = ["stop", "restart", "upgrade"])]
    pub upgrade_check: bool,

    /// The descriptor an upgrading start_server left its state in (set by start_server for
    /// its next program image; never by hand).
    #[arg(long, value_name = "FD", hide = true)]
    pub upgrade_state: Option<i32>,

    /// The descriptors of the upgrading start_server's own file and of its state, executed
    /// again if this image cannot take over (set by start_server; never by hand).
    #[arg(
        long,
        value_name = "EXE:STATE",
        hide = true,
        requires = "upgrade_state"
    )]
    pub upgrade_rollback: Option<String>,

    /// Why the upgrade this image rolled back from failed (set by start_server; never by hand).
    #[arg(long, value_name = "WHY", hide = true, requires = "upgrade_state")]
    pub upgrade_rolled_back: Option<String>,

    /// Print the man page (`man`) or a shell completion script (`bash`, `zsh`, `fish`) made
    /// from this very definition, and exit. For packagers; hidden from --help.
    #[arg(long, value_name = "WHAT", hide = true, value_parser = ["man", "bash", "zsh", "fish"])]
    pub generate: Option<String>,

    /// The server program and its arguments.
    #[arg(
        value_name = "PROGRAM [ARGS...]",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

const AFTER_LONG_HELP: &str = "\
Signals:
  HUP: start a new generation; once it is up, --signal-on-hup to the old
  TERM: --signal-on-term to every worker, wait for them all, exit 0
  INT, QUIT, USR1: the same, sending TERM
  USR2: upgrade start_server itself in place: exec the binary now at its
    path (checked first with --upgrade-check), same pid, sockets, workers
  a stop that had to KILL (--kill-old-timeout, strays) exits 3 instead
  PWR, real-time and the other signals that would kill: logged, ignored

The worker gets:
  SERVER_STARTER_PORT: KEY=FD;... (8080=3;127.0.0.1:81=4;/run/a.sock=5)
  SERVER_STARTER_GENERATION: 1, 2, ...: one more per spawn attempt
  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES: the same sockets, systemd-style
  NOTIFY_SOCKET: send READY=1 there to end a reload at once
  the variables of --envdir, re-read at every spawn

Environment of start_server:
  ENVDIR, ENABLE_AUTO_RESTART, AUTO_RESTART_INTERVAL, KILL_OLD_DELAY
  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES: sockets from systemd; a --port or
    --path at exactly a socket's address takes it (a bare --port=8080 wants
    ListenStream=0.0.0.0:8080, not the dual-stack [::]:8080 of
    ListenStream=8080); the others are keyed by their address
  NOTIFY_SOCKET, WATCHDOG_USEC: notifications to systemd
  JOURNAL_STREAM: log to journald when stderr is the journal

Differences from Server::Starter 0.35 (see the README for the full list):
  an empty --envdir file removes its variable; a removed file no longer applies
  unknown or ambiguous options exit 2 with the usage
  failed starts back off after three in a row; INT, QUIT, USR1 stop
  gracefully; USR2 upgrades start_server in place (the original dies of it);
  --port=P=FD never clobbers another socket

Examples:
  start_server --port=8080 -- plackup -s Starlet app.psgi
  start_server --port=[::1]:80 --path=/run/app.sock -- ./server
  start_server --restart --pid-file=app.pid --status-file=app.status
  start_server --stop --pid-file=app.pid
  start_server --upgrade --pid-file=app.pid";

const SOCKETS: &str = "Sockets";
const WORKERS: &str = "Workers and readiness";
const TIMING: &str = "Timing";
const FILES: &str = "Files and logging";
const CONTROL: &str = "Control socket and systemd";
const CLIENT: &str = "Client commands (talk to a running start_server)";

/// Seconds as an integer or decimal number (the original takes integers only).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    crate::vocab::time::seconds(text).ok_or_else(|| {
        format!("{text:?} is not a number of seconds from 0 to 4294967295 (e.g. 1 or 0.5)")
    })
}

/// `--cgroups`: whether to try (`auto`) or not (`off`).
fn parse_cgroups(text: &str) -> Result<bool, String> {
    match text {
        "auto" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither auto nor off")),
    }
}

/// A size in bytes: a number, or one with K, M, G or T (powers of 1024; `512M`, `1.5G`, `2GiB`).
fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => -1,
    };
    let bytes = number
        .parse::<f64>()
        .ok()
        .filter(|_| shift >= 0)
        .map(|n| n * 2f64.powi(shift))
        .filter(|b| b.is_finite() && *b >= 1.0 && *b < u64::MAX as f64);
    bytes.map(|b| b as u64).ok_or_else(|| {
        format!("{text:?} is not a size: give bytes, or a number with K, M, G or T (e.g. 512M)")
    })
}

/// Writes the man page or a completion script for `what` (see `--generate`) to `out`.
pub fn generate(what: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut command = Cli::command();
    let shell = match what {
        "man" => return crate::config::man_page::render(command, out),
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        _ => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "start_server", out);
    Ok(())
}

impl Cli {
    /// Parses the process's arguments, exiting with status 2 and a usage message on a usage
    /// error (clap's own, or an unknown or ambiguous option).
    pub fn from_env() -> Cli {
        let args = match single_dash_compat(std::env::args_os()) {
            Ok(args) => args,
            Err(problem) => usage_error(&problem),
        };
        if getopt::options_of(&args).any(|a| a == "-h") {
            let _ = std::io::stdout().lock().write_all(short_help().as_bytes());
            std::process::exit(0);
        }
        match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => e.exit(), // --help, --version
            Err(e) => usage_error(&clap_problem(&e)),
        }
    }
}

/// What `-h` shows: the common options and the client commands, each in a few words (`--help`
/// has the whole text of every option).
const SHORT_HELP: &[(&str, &[(&str, &str)])] = &[
    (
        "Common options",
        &[
            (
                "port",
                "TCP port to bind (PORT, HOST:PORT, [IPV6]:PORT; repeatable)",
            ),
            ("path", "unix socket to bind (repeatable)"),
            ("dir", "directory the program runs in"),
            (
                "interval",
                "how long a new worker must live to count as started",
            ),
            (
                "signal-on-hup",
                "signal for the old workers once a reload is up",
            ),
            ("workers", "copies of the program per generation"),
            ("ready-timeout", "how long a new worker has to send READY=1"),
            (
                "kill-old-timeout",
                "SIGKILL old workers this long after their signal",
            ),
            ("pid-file", "start_server's pid, locked while it runs"),
            ("status-file", "the live generations, GEN:PID per line"),
            ("log-file", "where output goes (a file, or '| COMMAND')"),
            ("control", "the control socket for the commands below"),
        ],
    ),
    (
        "Commands, to a running start_server",
        &[
            (
                "status",
                "what it runs, and how it goes (--json for all of it)",
            ),
            ("reload", "start a new generation and wait for it"),
            ("check", "exit 0 while a generation serves (a probe)"),
            ("restart", "reload through the pid and status files"),
            ("stop", "stop it and wait"),
            ("upgrade", "replace start_server itself in place"),
            ("metrics", "the metrics, in the Prometheus text format"),
        ],
    ),
];

/// `-h`: a screen (at most 30 lines) with the usage, the common options and the commands; the
/// option names and values come from the same definitions as `--help` and the man page.
pub fn short_help() -> String {
    let command = Cli::command();
    let named = |name: &str| -> String {
        let value = command
            .get_arguments()
            .find(|a| a.get_long() == Some(name))
            .filter(|a| a.get_action().takes_values())
            .and_then(|a| a.get_value_names().and_then(|v| v.first().cloned()))
            .map_or(String::new(), |v| format!("={v}"));
        format!("--{name}{value}")
    };
    let mut out = String::from(
        "start_server: runs a server program on sockets it holds, and replaces it\n\
         without refusing a connection.\n\n\
         Usage: start_server [OPTIONS] -- PROGRAM [ARGS...]\n       \
         start_server COMMAND (--pid-file=FILE | --control=PATH)\n",
    );
    for (heading, entries) in SHORT_HELP {
        out.push_str(&format!("\n{heading}:\n"));
        for (name, what) in *entries {
            out.push_str(&format!("  {:<28} {what}\n", named(name)));
        }
    }
    out.push_str("\nstart_server --help lists every option; man start_server says all.\n");
    out
}

/// Ends start_server on a bad command line, in the style of every error it prints
/// (`start_server: <what went wrong>: <what to do>`), with the usage below it; exit status 2.
fn usage_error(problem: &str) -> ! {
    let usage = Cli::command().render_usage();
    let _ = writeln!(
        std::io::stderr(),
        "start_server: {problem}: see start_server --help\n\n{usage}"
    );
    std::process::exit(2);
}

/// The first line of clap's message, without its `error: ` prefix (the usage is printed apart).
fn clap_problem(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    let problem = first.strip_prefix("error: ").unwrap_or(first);
    // clap lists the accepted values on a line of their own: keep them with the problem.
    match text
        .lines()
        .find_map(|l| l.trim().strip_prefix("[possible values: "))
    {
        Some(values) => format!("{problem} (one of {})", values.trim_end_matches(']')),
        None => problem.to_string(),
    }
}

/// Server::Starter reads its options with Getopt::Long: long options with one dash or two
/// (`-port=80`), abbreviated to any unambiguous prefix (`--status` for `--status-file`), up to
/// `--` or the first argument that is not an option (the program). Rewrites each option to its
/// full two-dash name for clap; an unknown or ambiguous one is an error in Getopt::Long's words
/// (`Unknown option: bogus`, `Option p is ambiguous (path, pid-file, port)`), instead of being
/// taken for the program. The worker's command line is never touched.
pub fn single_dash_compat(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Vec<OsString>, String> {
    let command = Cli::command();
    let options: Vec<(String, bool)> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_string(), a.get_action().takes_values())))
        .chain([("help".to_string(), false), ("version".to_string(), false)])
        .collect();
    getopt::rewrite(args, &options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<OsString> {
        single_dash_compat(args.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn unknown_and_ambiguous_options_are_named_like_getopt_long() {
        let err = |args: &[&str]| single_dash_compat(args.iter().map(OsString::from)).unwrap_err();
        assert_eq!(err(&["s", "--bogus", "--", "w"]), "Unknown option: bogus");
        assert_eq!(
            err(&["s", "--port=1", "-bogus=2", "w"]),
            "Unknown option: bogus"
        );
        assert_eq!(
            err(&["s", "--p=80", "--", "w"]),
            "Option p is ambiguous (path, pid-file, port)"
        );
        assert_eq!(
            rewrite(&["s", "--po=80", "--stat", "f"])[1..3],
            ["--port=80", "--status-file"]
        );
        assert_eq!(rewrite(&["s", "-h"])[1], "-h");
    }

    #[test]
    fn socket_options_after_the_program_are_found() {
        let command: Vec<OsString> = ["prog", "--port=80", "-path", "/s", "--portal"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(getopt::misplaced_options(&command), ["--port=80", "-path"]);
    }

    #[test]
    fn a_typo_gets_the_option_it_is_near() {
        let err = |args: &[&str]| single_dash_compat(args.iter().map(OsString::from)).unwrap_err();
        assert_eq!(
            err(&["s", "--prot=80", "--", "w"]),
            "Unknown option: prot (did you mean --port?)"
        );
        assert_eq!(
            err(&["s", "--intervall=1", "--", "w"]),
            "Unknown option: intervall (did you mean --interval?)"
        );
        assert_eq!(err(&["s", "--xyzzy", "--", "w"]), "Unknown option: xyzzy");
    }

    #[test]
    fn the_short_help_fits_a_screen() {
        let help = short_help();
        assert!(help.lines().count() <= 30, "{help}");
        assert!(
            help.contains("  --port=[HOST:]PORT[=FD]      TCP port to bind"),
            "{help}"
        );
        assert!(
            help.contains("  --status                     what it runs"),
            "{help}"
        );
        for line in help.lines() {
            assert!(line.chars().count() <= 90, "{line}");
        }
        for (_, entries) in SHORT_HELP {
            for (name, _) in *entries {
                assert!(
                    Cli::command()
                        .get_arguments()
                        .any(|a| a.get_long() == Some(name)),
                    "--{name} is not an option"
                );
            }
        }
        assert!(help.contains("--help"), "{help}");
    }

    #[test]
    fn status_with_a_value_is_the_status_file_and_bare_is_the_command() {
        assert_eq!(
            rewrite(&["s", "--status=f", "--", "w"])[1],
            "--status-file=f"
        );
        assert_eq!(
            rewrite(&["s", "-status", "f", "w"])[1..3],
            ["--status-file", "f"]
        );
        assert_eq!(rewrite(&["s", "--statu=f"])[1], "--status-file=f");
        assert_eq!(
            rewrite(&["s", "--status", "--json"])[1..3],
            ["--status", "--json"]
        );
        assert_eq!(rewrite(&["s", "--pid-file=p", "--status"])[2], "--status");
        let cli = Cli::try_parse_from(rewrite(&["s", "--status", "--pid-file=p"])).unwrap();
        assert!(cli.status && cli.status_file.is_none());
    }

    #[test]
    fn single_dash_long_options_become_double() {
        let out = rewrite(&[
            "start_server",
            "-port=80",
            "-interval",
            "3",
            "--",
            "w",
            "-port=1",
        ]);
        assert_eq!(out[1], "--port=80");
        assert_eq!(out[2], "--interval");
        assert_eq!(out[3], "3");
        assert_eq!(out[6], "-port=1", "worker arguments are left alone");
    }

    #[test]
    fn program_arguments_are_untouched_without_separator() {
        let out = rewrite(&["start_server", "--port", "80", "prog", "-daemonize"]);
        assert_eq!(out[4], "-daemonize");
        let cli = Cli::try_parse_from(out).unwrap();
        assert_eq!(
            cli.command,
            vec![OsString::from("prog"), "-daemonize".into()]
        );
        assert!(!cli.daemonize);
    }

    #[test]
    fn both_value_forms_and_repeats_parse() {
        let cli = Cli::try_parse_from(rewrite(&[
            "start_server",
            "--port=80",
            "--port",
            "81",
            "--path",
            "/tmp/s",
            "--interval=0.5",
            "--signal-on-hup",
            "USR1",
            "--",
            "prog",
            "--flag",
        ]))
        .unwrap();
        assert_eq!(cli.port, vec!["80", "81"]);
        assert_eq!(cli.interval, Duration::from_millis(500));
        assert_eq!(cli.signal_on_hup, "USR1");
        assert_eq!(cli.command, vec![OsString::from("prog"), "--flag".into()]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "0", "M", "12X", "-5M", "1e3", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
