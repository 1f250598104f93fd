//! From the parsed command line to a checked configuration: everything an operator can get
//! wrong is found here, before a socket is bound or a file written.

// The command line's doc comments are its --help text, where `[IPV6]:PORT` is not a link.
#[allow(rustdoc::broken_intra_doc_links)]
pub mod cli;
pub mod getopt;
pub mod listen_address;
pub mod log_target;
pub mod man_page;
pub mod port_spec;
pub mod program;
pub mod worker_env;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use nix::sys::socket::Backlog;

use crate::config::cli::Cli;
use crate::config::listen_address::ListenAddress;
use crate::config::log_target::LogTarget;
use crate::config::port_spec::PortSpec;
use crate::config::worker_env::{Env, not_inherited};
use crate::error::{Error, Result};
use crate::supervisor::{Policy, Ready};
use crate::vocab::signal;

/// What start_server runs with.
#[derive(Debug)]
pub struct Config {
    /// `--port` sockets, in order.
    pub ports: Vec<PortSpec>,
    /// `--path` sockets, in order.
    pub paths: Vec<PathBuf>,
    /// Listen backlog.
    pub backlog: Backlog,
    /// Working directory of the workers.
    pub dir: Option<PathBuf>,
    /// Interval and signals.
    pub policy: Policy,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--status-file`.
    pub status_file: Option<PathBuf>,
    /// `--envdir` (or `ENVDIR`).
    pub envdir: Option<PathBuf>,
    /// `--log-file`.
    pub log: Option<LogTarget>,
    /// `--daemonize`.
    pub daemonize: bool,
    /// Describe the sockets with `LISTEN_*` too (unless `--no-listen-fds`).
    pub listen_fds: bool,
    /// The server program and its arguments.
    pub command: Vec<OsString>,
    /// The environment every worker starts from (the envdir goes on top at each spawn).
    pub base_env: Env,
    /// The control socket, and whether the operator named it (else a failure to create it is
    /// only a warning).
    pub control: Option<(PathBuf, bool)>,
    /// `--reload-on-change`.
    pub reload_on_change: Vec<PathBuf>,
    /// A cgroup per generation where start_server may manage one (`--cgroups=auto`).
    pub cgroups: bool,
    /// `--worker-max-memory`, bytes.
    pub worker_max_memory: Option<u64>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<ListenAddress>,
}

impl Config {
    /// Checks the command line; `env` is start_server's own environment.
    pub fn new(cli: Cli, env: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Config> {
        check_command(&cli)?;
        let policy = policy(&cli)?;
        let ports = cli
            .port
            .iter()
            .map(|p| PortSpec::parse(p))
            .collect::<Result<Vec<_>>>()?;
        check_dir(&cli)?;
        let base_env = base_env(&cli, env);
        check_program(&cli, &base_env)?;
        let backlog = backlog(cli.backlog)?;
        let metrics_listen = cli
            .metrics_listen
            .as_deref()
            .map(ListenAddress::parse)
            .transpose()?;
        let control = match &cli.control {
            Some(path) => Some((path.clone(), true)),
            None => {
                let runtime_directory = std::env::var("RUNTIME_DIRECTORY").ok();
                crate::wire::control::default_path(
                    cli.pid_file.as_deref(),
                    runtime_directory.as_deref(),
                )
                .map(|path| (path, false))
            }
        };
        Ok(Config {
            ports,
            paths: cli.path,
            backlog,
            dir: cli.dir,
            policy,
            pid_file: cli.pid_file,
            status_file: cli.status_file,
            envdir: cli.envdir,
            log: cli.log_file.as_deref().map(LogTarget::parse),
            daemonize: cli.daemonize,
            listen_fds: !cli.no_listen_fds,
            command: cli.command,
            base_env,
            control,
            reload_on_change: cli.reload_on_change,
            cgroups: cli.cgroups,
            worker_max_memory: cli.worker_max_memory,
            metrics_listen,
        })
    }
}

/// The server command is there, and `--daemonize` has a log to write to.
fn check_command(cli: &Cli) -> Result<()> {
    if cli.daemonize && cli.log_file.is_none() {
        return Err(Error::usage(
            "--daemonize needs --log-file: a daemon has no terminal to write its log to",
        ));
    }
    if cli.command.is_empty() {
        return Err(Error::usage(
            "server program not specified: give it after the options: start_server [OPTIONS] -- PROGRAM [ARGS...]",
        ));
    }
    if let Some(bad) = cli
        .command
        .iter()
        .find(|a| a.as_encoded_bytes().contains(&0))
    {
        return Err(Error::usage(format!(
            "the server command line contains a NUL byte: {bad:?}"
        )));
    }
    Ok(())
}

/// The supervisor's settings from the command line.
fn policy(cli: &Cli) -> Result<Policy> {
    if cli.max_extra.is_some() && cli.workers < 2 {
        return Err(Error::usage(
            "--max-extra rolls a reload over several copies: give --workers=N with N of 2 or more, \
             or drop --max-extra",
        ));
    }
    Ok(Policy {
        interval: cli.interval,
        signal_on_hup: signal_option(&cli.signal_on_hup, "--signal-on-hup")?,
        signal_on_term: signal_option(&cli.signal_on_term, "--signal-on-term")?,
        ready_timeout: cli.ready_timeout.filter(|d| !d.is_zero()),
        kill_old_timeout: cli.kill_old_timeout,
        backoff_after: crate::supervisor::DEFAULT_BACKOFF_AFTER,
        backoff_max: cli.max_restart_delay,
        shutdown_delay: cli.shutdown_delay,
        worker_watchdog: cli.worker_watchdog.filter(|d| !d.is_zero()),
        workers: usize::from(cli.workers),
        max_extra: cli.max_extra.map(usize::from),
        ready: match cli.ready.as_str() {
            "listening" => Ready::Listening,
            _ => Ready::Notify,
        },
        bake: cli.bake,
    })
}

/// A signal option's value; an unknown name is a usage error naming the option, and so is a stop
/// signal (STOP, TSTP, TTIN, TTOU), which would leave the workers stopped instead of ending them.
fn signal_option(text: &str, option: &str) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    let parsed = signal::parse(text).map_err(|e| Error::usage(format!("{option}: {e}")))?;
    if matches!(
        parsed,
        Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU
    ) {
        return Err(Error::usage(format!(
            "{option}={text}: {} stops a process instead of ending it, and the workers would \
             never exit: use TERM, QUIT, INT or USR1",
            signal::short_name(parsed)
        )));
    }
    Ok(parsed)
}

fn check_dir(cli: &Cli) -> Result<()> {
    match &cli.dir {
        Some(dir) if !dir.is_dir() => Err(Error::usage(format!(
            "--dir {}: no such directory: create it, or name the worker's existing working directory",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// start_server's environment without systemd's variables and those it writes for workers, plus
/// the settings the original passes on to the worker through the environment.
fn base_env(cli: &Cli, env: impl IntoIterator<Item = (OsString, OsString)>) -> Env {
    let mut base_env: Env = env.into_iter().filter(|(k, _)| !not_inherited(k)).collect();
    let mut set = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            base_env.insert(name.into(), value.into());
        }
    };
    set(
        "ENVDIR",
        cli.envdir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
    );
    set(
        "ENABLE_AUTO_RESTART",
        cli.enable_auto_restart.then(|| "1".to_string()),
    );
    set(
        "AUTO_RESTART_INTERVAL",
        cli.auto_restart_interval
            .map(|d| d.as_secs_f64().to_string()),
    );
    set(
        "KILL_OLD_DELAY",
        cli.kill_old_delay.map(|d| d.as_secs_f64().to_string()),
    );
    // `--worker-watchdog`, in the systemd convention (WATCHDOG_PID is added at each spawn).
    set(
        "WATCHDOG_USEC",
        cli.worker_watchdog
            .filter(|d| !d.is_zero())
            .map(|d| d.as_micros().to_string()),
    );
    base_env
}

/// The program can be run by the first worker (with the envdir's `PATH`, if it sets one): a
/// typo is one clear error now instead of a worker that keeps failing.
fn check_program(cli: &Cli, base_env: &Env) -> Result<()> {
    let mut first_env = base_env.clone();
    if let Some(dir) = &cli.envdir {
        let overlay = worker_env::read_envdir(dir).map_err(|e| {
            Error::usage(format!("--envdir {}: cannot read it: {e}", dir.display()))
        })?;
        if let Some(refused) = overlay.refused.first() {
            return Err(Error::runtime(refused.to_string()).caused_by(refused.clone()));
        }
        overlay.apply_to(&mut first_env);
    }
    crate::config::program::resolve(
        &cli.command[0],
        first_env.get(OsStr::new("PATH")).map(OsString::as_os_str),
        cli.dir.as_deref(),
    )
    .map_err(|e| Error::usage(e.to_string()))?;
    Ok(())
}

fn backlog(requested: Option<i32>) -> Result<Backlog> {
    match requested {
        Some(n) => {
            Backlog::new(n).map_err(|_| Error::usage(format!("--backlog {n} is out of range")))
        }
        None => Ok(Backlog::MAXCONN),
    }
}
