//! The composition root: start_server's life from set-up to exit, and the one place that builds
//! (or, after an upgrade in place, adopts) the parts the event loop runs.
//!
//! Set-up goes in the order the original's does (pid file lock, log, sockets, redirection,
//! daemon, pid). Each resource is a guard, so an error at any step removes what the steps
//! before it created.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::Config;
use crate::config::log_target::LogTarget;
use crate::error::{Context, Result};
use crate::server::cgroup::tree::Cgroups;
use crate::server::control::Control;
use crate::server::control::socket::ControlSocket;
use crate::server::control::status::Fixed;
pub use crate::server::event_loop::Ending;
use crate::server::event_loop::{Anew, EventLoop, Parts, Resumed};
use crate::server::file_watch::FileWatch;
use crate::server::files::pid_file::PidFile;
use crate::server::files::status_file::StatusFile;
use crate::server::log::output::{self, Logger};
use crate::server::metrics::counters::Counters;
use crate::server::metrics::listen::MetricsListen;
use crate::server::notify::fd_store;
use crate::server::notify::systemd::Notifier;
use crate::server::notify::workers::WorkerNotify;
use crate::server::probe::memory_watch::MemoryWatch;
use crate::server::probe::watch::ListeningWatch;
use crate::server::process::hygiene;
use crate::server::process::reap::wait_for_exit;
use crate::server::process::signals::Signals;
use crate::server::process::spawner::{Program, Spawner};
use crate::server::process::strays::Adopted;
use crate::server::upgrade::handover::Handover;
use crate::server::upgrade::rollback::WayBack;
use crate::server::upgrade::{Image, Upgrade, state};
use crate::sockets::activation::Inherited;
use crate::sockets::{self, conventions};
use crate::supervisor::Supervisor;

/// How long start_server waits for the `--log-file` command to finish writing at exit.
const LOGGER_GRACE: Duration = Duration::from_secs(5);

/// Runs start_server until it is told to stop; how the stop went decides the exit status.
/// `inherited`: the sockets systemd handed over.
pub fn serve(mut config: Config, inherited: Vec<Inherited>) -> Result<Ending> {
    let image = Image::current();
    let started = Instant::now();
    crate::server::log::stderr::attach_stderr();
    let nofile = raise_open_file_limit();
    let mut pid_file = config.pid_file.as_deref().map(PidFile::lock).transpose()?;
    let log = config.log.as_ref().map(output::open).transpose()?;
    info!("start_server (pid:{}) starting now...", std::process::id());
    let systemd = Notifier::from_env();
    let mut bound = bind_sockets(&config, inherited, &systemd)?;
    let listeners = std::mem::take(&mut bound.listeners);
    if listeners.is_empty() {
        let misplaced = crate::config::getopt::misplaced_options(&config.command);
        if !misplaced.is_empty() {
            warn!(
                "no socket to listen on, but the program's arguments hold {}: start_server's \
                 options go before the program (start_server [OPTIONS] -- PROGRAM [ARGS...])",
                misplaced.join(" ")
            );
        }
    }
    let (for_workers, socket_info) = sockets::for_workers::describe(listeners, config.listen_fds)?;
    let logger = match log {
        Some(log) => log.redirect_stdio()?,
        None => None,
    };
    if config.daemonize {
        crate::server::process::daemon::daemonize()?;
    }
    if let Some(pid_file) = &mut pid_file {
        pid_file.write_pid()?;
    }
    let anew = set_up_anew(&config)?;
    let control = open_control(config.control.take())?.map(|s| Control::new(s, Default::default()));
    let metrics = (config.metrics_listen.as_ref())
        .map(MetricsListen::bind)
        .transpose()?;
    // Before the first worker: start_server moves itself into a leaf of its subtree.
    let cgroups = Cgroups::set_up(config.cgroups, config.policy.kill_old_timeout);
    let workers_notify = WorkerNotify::bind()?;
    let spawner = Spawner::new(
        program(&mut config),
        for_workers,
        bound,
        nofile,
        workers_notify.env_value(),
    );
    let parts = Parts {
        anew,
        spawner,
        workers_notify,
        systemd,
        control,
        logger,
        status_file: config
            .status_file
            .as_deref()
            .map(StatusFile::new)
            .transpose()?,
        facts: Fixed {
            started,
            sockets: socket_info,
        },
        upgrade: Upgrade::new(image, config.pid_file.as_deref())?,
        pid_file,
        cgroups,
        metrics,
        counters: Counters::default(),
    };
    // The envdir's settings are read again at every spawn, the first one included.
    let tunables = crate::config::worker_env::tunables(&config.base_env);
    let mut supervisor = Supervisor::new(config.policy, tunables, Instant::now());
    let first = supervisor.start();
    let mut event_loop = EventLoop::new(supervisor, parts, first);
    let ending = event_loop.run()?;
    Ok(finish(event_loop, ending))
}

/// What the image before this one handed over on the command line.
pub struct Handed {
    /// The state (a sealed memfd).
    pub state_fd: RawFd,
    /// The way back to that image, if it left one.
    pub way_back: Option<WayBack>,
    /// This image is the one an upgrade rolled back to, and why.
    pub rolled_back: Option<String>,
}

/// Goes on where the program image before this one left off (an upgrade in place): the state
/// it handed over names the sockets, files and workers it had; `config` comes from the same
/// command line. Until the loop runs, a failure (an error or a panic) executes the image before
/// again, if it left a way back.
pub fn resume(mut config: Config, handed: Handed) -> Result<Ending> {
    crate::server::log::stderr::attach_stderr();
    let back = Fallback(handed.way_back);
    if let Some(way_back) = back.0 {
        way_back.arm();
    }
    // SAFETY: the image before this one left the state at this fd, open for our whole life.
    let state_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(handed.state_fd) };
    let (state, state_bytes) = back.or_back(state::read(state_fd))?;
    back.or_back(state.validate())?;
    let image = Image::current();
    let argv: Vec<String> = image
        .argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if argv != state.argv {
        warn!(
            "the command line differs from the one handed over ({:?}); going on with this one",
            state.argv
        );
    }
    raise_open_file_limit();
    crate::server::process::signals::restore_xfsz_was_ignored(state.xfsz_was_ignored);
    let from = state.written_by.clone();
    let upgrade = back.or_back(Upgrade::new(image, config.pid_file.as_deref()))?;
    // SAFETY: the descriptors the state names are those the image before this one handed over,
    // each open and ours alone (validated above).
    let (supervisor, parts) = unsafe { adopt_parts(state, &mut config, upgrade, &back) }?;
    let mut event_loop = EventLoop::new(supervisor, parts, Vec::new());
    event_loop.resumed(
        match handed.rolled_back {
            Some(why) => Resumed::RolledBack { why },
            None => Resumed::Upgraded { from },
        },
        state_bytes,
    );
    // Taken over: from now on, everything start_server holds is its own, close-on-exec.
    if let Some(way_back) = back.0 {
        way_back.disarm();
    }
    hygiene::standard_fds_and_no_leaks();
    let _ = nix::unistd::close(handed.state_fd);
    let ending = event_loop.run()?;
    Ok(finish(event_loop, ending))
}

/// The way back, while there is one: a failure before the loop runs executes the image before
/// this one again, from where it failed (no destructor runs: what it handed over stays as it
/// was).
struct Fallback(Option<WayBack>);

impl Fallback {
    fn or_back<T>(&self, result: Result<T>) -> Result<T> {
        match (result, self.0) {
            (Err(e), Some(way_back)) => way_back.go_back(&e.to_string()),
            (result, _) => result,
        }
    }
}

/// The supervisor and the parts as the image before this one handed them over.
///
/// # Safety
///
/// As [`Handover::take_over`]: the descriptors `state` names are open and ours alone.
unsafe fn adopt_parts(
    state: state::State,
    config: &mut Config,
    upgrade: Upgrade,
    back: &Fallback,
) -> Result<(Supervisor, Parts)> {
    let now = Instant::now();
    // SAFETY: every take_over below is passed on the caller's promise for its own descriptors.
    unsafe {
        let pid_file = match (state.pid_file_fd, config.pid_file.clone()) {
            (Some(fd), Some(path)) => Some(back.or_back(PidFile::take_over(fd, path, now))?),
            _ => None,
        };
        let logger = match (state.logger, &config.log) {
            (Some(logger), Some(LogTarget::Command(command))) => {
                Some(back.or_back(Logger::take_over(logger, command.clone(), now))?)
            }
            _ => None,
        };
        let anew = back.or_back(set_up_anew(config))?;
        let control = match state.control {
            Some(socket) => {
                Some(back.or_back(Control::take_over((socket, state.waiting), (), now))?)
            }
            // An image from before the control socket: it is created now.
            None => back
                .or_back(open_control(config.control.take()))?
                .map(|s| Control::new(s, Default::default())),
        };
        let workers_notify = back.or_back(WorkerNotify::take_over(state.worker_notify, (), now))?;
        let metrics = match state.metrics_listen {
            Some(listen) => Some(back.or_back(MetricsListen::take_over(listen, (), now))?),
            // An image from before the metrics, or without them.
            None => back.or_back(
                config
                    .metrics_listen
                    .as_ref()
                    .map(MetricsListen::bind)
                    .transpose(),
            )?,
        };
        let notify_socket = workers_notify.env_value();
        let given = (program(config), notify_socket);
        let spawner = back.or_back(Spawner::take_over(state.spawner, given, now))?;
        let status_file = match config.status_file.clone() {
            Some(path) => {
                Some(back.or_back(StatusFile::take_over(state.status_written, path, now))?)
            }
            None => None,
        };
        let parts = Parts {
            anew,
            spawner,
            workers_notify,
            systemd: Notifier::from_env(),
            control,
            logger,
            status_file,
            facts: back.or_back(Fixed::take_over(state.facts, (), now))?,
            upgrade,
            pid_file,
            cgroups: None,
            metrics,
            counters: state.counters,
        };
        let policy = config.policy;
        let supervisor = back.or_back(Supervisor::take_over(state.supervisor, policy, now))?;
        // The workers' cgroups as the image before made them (none if it had none).
        let given = (config.policy.kill_old_timeout, supervisor.workers());
        let cgroups = match state.cgroups {
            Some(cgroups) => Some(back.or_back(Cgroups::take_over(cgroups, given, now))?),
            None => {
                if config.cgroups && crate::server::cgroup::detect().is_ok() {
                    info!(
                        "cgroups: the program before this one gave the workers none: \
                         generations get cgroups from the next start of start_server"
                    );
                }
                None
            }
        };
        Ok((supervisor, Parts { cgroups, ..parts }))
    }
}

/// What a fresh start and an upgrade set up alike: start_server as a subreaper, the signals,
/// and `--reload-on-change`'s watch (a change pending in the image before is lost with its
/// inotify fd: the watch starts afresh).
fn set_up_anew(config: &Config) -> Result<Anew> {
    // Orphans of workers (a worker that daemonized, say) become our children, to be stopped
    // and reaped instead of lingering with the sockets. (As PID 1 every orphan of the PID
    // namespace comes to us anyway.)
    nix::sys::prctl::set_child_subreaper(true)
        .context(|| "failed to become a child subreaper".to_string())?;
    let watch = (!config.reload_on_change.is_empty())
        .then(|| FileWatch::new(&config.reload_on_change))
        .transpose()?;
    Ok(Anew {
        signals: Signals::open()?,
        strays: Adopted::new(std::process::id() == 1),
        watch,
        listening: ListeningWatch::new(),
        memory: (config.worker_max_memory).map(|limit| MemoryWatch::new(limit, Instant::now())),
    })
}

/// The server program of the command line.
fn program(config: &mut Config) -> Program {
    Program {
        command: std::mem::take(&mut config.command),
        dir: config.dir.take(),
        envdir: config.envdir.take(),
        base_env: std::mem::take(&mut config.base_env),
    }
}

/// Clean-up once the loop is over: the files and sockets go, the log command gets the rest.
fn finish(event_loop: EventLoop, ending: Ending) -> Ending {
    info!("exiting");
    let mut remains = event_loop.finish();
    // The pid file's lock goes last: `--stop` returns once it is released, and by then the
    // socket files are gone too (with the spawner, in `finish`).
    drop(remains.pid_file.take());
    if let Some(logger) = remains.logger.take() {
        flush_logger(logger, &mut remains.signals);
    }
    ending
}

/// The control socket: one the operator named must be created; the default one (beside the pid
/// file, or in `RUNTIME_DIRECTORY`) is skipped with a warning when it cannot be, unless another
/// process holds its path: clients would take that process's answers for start_server's.
fn open_control(control: Option<(PathBuf, bool)>) -> Result<Option<ControlSocket>> {
    match control {
        None => Ok(None),
        Some((path, true)) => ControlSocket::bind(&path).map(Some),
        Some((path, false)) => match ControlSocket::bind(&path) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) if squatted(&path) => Err(e),
            Err(e) => {
                warn!("no control socket: {e}");
                Ok(None)
            }
        },
    }
}

/// A socket is at `path` that another process listens on, or that another user made.
fn squatted(path: &std::path::Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path).is_ok_and(|meta| {
        meta.file_type().is_socket()
            && (!crate::vocab::trust::trusted_uid(meta.uid())
                || std::os::unix::net::UnixStream::connect(path).is_ok())
    })
}

/// Binds (or takes from systemd) every socket; the guard that removes the bound paths holds
/// them.
fn bind_sockets(
    config: &Config,
    inherited: Vec<Inherited>,
    systemd: &Notifier,
) -> Result<sockets::Bound> {
    for socket in &inherited {
        if !socket.name.starts_with(conventions::STORE_PREFIX) {
            // "unknown" is systemd's name for a socket its unit did not name.
            match socket.name.as_str() {
                "" | "unknown" => info!("using socket {} from systemd", socket.key()),
                name => info!("using socket {} ({name}) from systemd", socket.key()),
            }
        }
    }
    let mut bound = sockets::bind_all(
        &config.ports,
        &config.paths,
        config.backlog,
        inherited,
        |stale| fd_store::retire(systemd, stale),
    )?;
    fd_store::retire(systemd, &bound.renamed);
    fd_store::keep(systemd, &bound.listeners);
    if systemd.fd_store() {
        bound.keep_socket_files();
    }
    Ok(bound)
}

/// At exit: the log command gets what is left in the pipe and a bounded time to write it (a
/// command between two runs is started once more for that).
fn flush_logger(mut logger: Logger, signals: &mut Signals) {
    logger.restart_now(Instant::now());
    output::close_stdio();
    if let Some(pid) = logger.pid() {
        drop(logger);
        wait_for_exit(
            signals,
            &mut std::collections::BTreeSet::from([pid]),
            LOGGER_GRACE,
        );
    }
}

/// Raises the soft open-file limit to the hard one, so that many sockets (each held at a high fd,
/// see `sockets::placement`) fit; returns the original limit, which workers get back.
fn raise_open_file_limit() -> libc::rlimit {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(
                    "failed to raise the open-file limit to {hard}: {}",
                    e.desc()
                );
            }
            libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            }
        }
        Err(e) => {
            warn!("failed to read the open-file limit: {}", e.desc());
            libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            }
        }
    }
}
