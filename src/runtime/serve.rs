//! start_server's life: set-up in the order the original does it (pid file lock, log, sockets,
//! redirection, daemonize, pid), the event loop, then clean-up. Each resource is a guard, so an
//! error at any step removes what the steps before it created.

use std::os::fd::{AsFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::Config;
use crate::control::protocol::SocketInfo;
use crate::error::{Context, Result};
use crate::runtime::control_socket::ControlSocket;
use crate::runtime::event_loop::{self, Ending, Runtime};
use crate::runtime::file_watch::FileWatch;
use crate::runtime::notify::Notifier;
use crate::runtime::output::{self, LogTarget, Logger};
use crate::runtime::pid_file::PidFile;
use crate::runtime::signals::Signals;
use crate::runtime::spawn::{FdLayout, Placement};
use crate::runtime::status_file::StatusFile;
use crate::runtime::status_report;
use crate::runtime::strays::Adopted;
use crate::runtime::upgrade::{self, Handover, Image};
use crate::runtime::worker_notify::WorkerNotify;
use crate::sockets::{self, Origin};
use crate::supervisor::Supervisor;

/// Runs start_server until it is told to stop; how the stop went decides the exit status.
pub fn serve(mut config: Config) -> Result<Ending> {
    let image = Image::current(config.pid_file.as_deref());
    let started = Instant::now();
    crate::runtime::logging::attach_stderr();
    let nofile = raise_open_file_limit();
    let mut pid_file = config.pid_file.as_deref().map(PidFile::lock).transpose()?;
    let log = config.log.as_ref().map(output::open).transpose()?;
    info!("start_server (pid:{}) starting now...", std::process::id());
    let notifier = Notifier::from_env();
    let (bound, sockets) = bind_sockets(&mut config, &notifier)?;
    let logger = match log {
        Some(log) => log.redirect_stdio()?,
        None => None,
    };
    if config.daemonize {
        output::daemonize()?;
    }
    if let Some(pid_file) = &mut pid_file {
        pid_file.write_pid()?;
    }
    // Orphans of workers (a worker that daemonized, say) become our children, to be stopped
    // and reaped instead of lingering with the sockets. (As PID 1 every orphan of the PID
    // namespace comes to us anyway.)
    nix::sys::prctl::set_child_subreaper(true)
        .context(|| "failed to become a child subreaper".to_string())?;
    let watch = (!config.reload_on_change.is_empty())
        .then(|| FileWatch::new(&config.reload_on_change))
        .transpose()?;
    let control = open_control(config.control.take())?;
    let mut signals = Signals::open()?;
    let mut runtime = Runtime {
        layout: sockets.layout,
        port_env: sockets.port_env,
        listen_env: sockets.listen_env,
        command: config.command,
        dir: config.dir,
        envdir: config.envdir,
        base_env: config.base_env,
        status: config.status_file.as_deref().map(StatusFile::new),
        nofile,
        logger,
        notifier,
        worker_notify: WorkerNotify::bind()?,
        strays: Adopted::new(std::process::id() == 1),
        handover: Handover {
            image,
            pid_file_fd: pid_file.as_ref().map(PidFile::raw_fd),
            unix_paths: bound.unix_paths().to_vec(),
        },
        control,
        watch,
        fixed: status_report::Fixed {
            started,
            sockets: sockets.info,
        },
    };
    let ending = event_loop::run(&mut runtime, &mut signals, config.policy)?;
    Ok(finish(runtime, signals, pid_file, bound, ending))
}

/// Goes on where the program image before this one left off (an upgrade in place): the state
/// at `state_fd` names the sockets, files and workers it had; `config` comes from the same
/// command line.
pub fn resume(mut config: Config, state_fd: RawFd) -> Result<Ending> {
    crate::runtime::logging::attach_stderr();
    // SAFETY: the image before this one left the state at this fd for us alone.
    let (state, state_bytes) = unsafe { upgrade::read_state(state_fd) }?;
    let mut image = Image::current(config.pid_file.as_deref());
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
    image.binary = PathBuf::from(&state.binary);
    raise_open_file_limit();
    crate::runtime::signals::restore_xfsz_was_ignored(state.xfsz_was_ignored);
    let pid_file = match (state.pid_file_fd, config.pid_file.as_deref()) {
        // SAFETY: the fd is the locked pid file the image before this one handed over.
        (Some(fd), Some(path)) => Some(unsafe { PidFile::adopt(fd, path) }?),
        _ => None,
    };
    let unix_paths: Vec<PathBuf> = state.sockets.unix_paths.iter().map(PathBuf::from).collect();
    let bound = sockets::Bound::adopt(unix_paths.clone());
    let now = Instant::now();
    let logger = match (&state.logger, &config.log) {
        (Some(logger), Some(LogTarget::Command(command))) => {
            // SAFETY: the fds are the log command's pipe and outputs, handed over.
            Some(unsafe { Logger::adopt(command.clone(), logger, now) })
        }
        _ => None,
    };
    nix::sys::prctl::set_child_subreaper(true)
        .context(|| "failed to become a child subreaper".to_string())?;
    // A pending change is lost with the old inotify fd: the watch starts afresh.
    let watch = (!config.reload_on_change.is_empty())
        .then(|| FileWatch::new(&config.reload_on_change))
        .transpose()?;
    let control = match state.control.clone() {
        // SAFETY: the control socket and its clients, handed over.
        Some(control) => Some(unsafe { ControlSocket::adopt(control) }),
        // An image from before the control socket: it is created now.
        None => open_control(config.control.take())?,
    };
    let mut signals = Signals::open()?;
    let mut runtime = Runtime {
        // SAFETY: the sockets handed over, each at its fd.
        layout: unsafe { FdLayout::adopt(&state.sockets.slots, state.sockets.floor) },
        port_env: state.sockets.port_env.clone(),
        listen_env: state.sockets.listen_env.clone(),
        command: config.command,
        dir: config.dir,
        envdir: config.envdir,
        base_env: config.base_env,
        status: config
            .status_file
            .as_deref()
            .map(|path| StatusFile::adopt(path, state.status_written)),
        nofile: libc::rlimit {
            rlim_cur: state.nofile.0,
            rlim_max: state.nofile.1,
        },
        logger,
        notifier: Notifier::from_env(),
        // SAFETY: the workers' notification socket, handed over.
        worker_notify: unsafe {
            WorkerNotify::adopt(state.worker_notify.fd, state.worker_notify.name.clone())
        },
        strays: Adopted::new(std::process::id() == 1),
        handover: Handover {
            image,
            pid_file_fd: state.pid_file_fd,
            unix_paths,
        },
        control,
        watch,
        fixed: status_report::Fixed {
            started: now
                .checked_sub(std::time::Duration::from_micros(
                    state.started.unsigned_abs(),
                ))
                .unwrap_or(now),
            sockets: state.socket_info.clone(),
        },
    };
    let supervisor = Supervisor::import(state.supervisor, config.policy, now);
    let ending = event_loop::resume(
        &mut runtime,
        &mut signals,
        supervisor,
        state.event_loop,
        &state.written_by,
        state_bytes,
    )?;
    Ok(finish(runtime, signals, pid_file, bound, ending))
}

/// Clean-up once the loop is over: the files and sockets go, the log command gets the rest.
fn finish(
    mut runtime: Runtime,
    mut signals: Signals,
    pid_file: Option<PidFile>,
    bound: sockets::Bound,
    ending: Ending,
) -> Ending {
    info!("exiting");
    if let Some(report) = &runtime.handover.image.report {
        let _ = std::fs::remove_file(report);
    }
    let logger = runtime.logger.take();
    drop(runtime);
    // The pid file's lock goes last: `--stop` returns once it is released, and by then the
    // socket files are gone too.
    drop(bound);
    drop(pid_file);
    if let Some(logger) = logger {
        flush_logger(logger, &mut signals);
    }
    ending
}

/// The control socket: one the operator named must be created; the default one is skipped
/// with a warning when it cannot be.
fn open_control(control: Option<(std::path::PathBuf, bool)>) -> Result<Option<ControlSocket>> {
    match control {
        None => Ok(None),
        Some((path, true)) => ControlSocket::bind(&path).map(Some),
        Some((path, false)) => match ControlSocket::bind(&path) {
            Ok(socket) => Ok(Some(socket)),
            Err(e) => {
                warn!("no control socket: {e}");
                Ok(None)
            }
        },
    }
}

/// Each socket's actual address, and where it came from: `bound` here, `inherited` from a
/// socket unit, or `stored` (taken back from systemd's file descriptor store).
fn socket_origins(listeners: &[sockets::Listener]) -> Vec<(String, &'static str)> {
    use std::os::fd::AsRawFd;
    listeners
        .iter()
        .map(|listener| {
            let raw = listener.fd.as_raw_fd();
            let address = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(raw)
                .map_or_else(|_| listener.key.clone(), |a| a.to_string());
            let origin = match listener.origin {
                Origin::Bound(_) => "bound",
                Origin::Unit => "inherited",
                Origin::Stored(_) => "stored",
            };
            (address, origin)
        })
        .collect()
}

/// The sockets as workers get them.
struct WorkerSockets {
    layout: FdLayout,
    /// `SERVER_STARTER_PORT`.
    port_env: String,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES`, when they apply.
    listen_env: Option<(String, String)>,
    /// What `status` says of them.
    info: Vec<SocketInfo>,
}

/// Binds (or takes from systemd) every socket and places them for the workers; the guard that
/// removes the bound paths is returned with them.
fn bind_sockets(
    config: &mut Config,
    notifier: &Notifier,
) -> Result<(sockets::Bound, WorkerSockets)> {
    for socket in &config.inherited {
        if !socket.name.starts_with(sockets::conventions::STORE_PREFIX) {
            info!(
                "using socket {} ({}) from systemd",
                socket.key(),
                socket.name
            );
        }
    }
    let mut bound = sockets::bind_all(
        &config.ports,
        &config.paths,
        config.backlog,
        std::mem::take(&mut config.inherited),
        |stale| retire_stored(notifier, stale),
    )?;
    retire_stored(notifier, &bound.renamed);
    store_bound(notifier, &bound.listeners);
    if notifier.fd_store() {
        bound.keep_socket_files();
    }
    let listeners = std::mem::take(&mut bound.listeners);
    let explicit: Vec<_> = listeners.iter().filter_map(|l| l.requested_fd).collect();
    let origins = socket_origins(&listeners);
    let (layout, described) = FdLayout::new(listeners)?;
    let info = described
        .iter()
        .zip(origins)
        .map(|(placed, (address, origin))| SocketInfo {
            key: placed.key.clone(),
            address,
            fd: placed.fd,
            origin: origin.to_string(),
        })
        .collect();
    for fd in explicit {
        info!("socket is duplicated to file descriptor {fd}");
    }
    let listen_env = if config.listen_fds {
        listen_fds_env(&described)
    } else {
        None
    };
    // Set even when empty, as the original does: its client library dies when it is missing,
    // and a value from start_server's own environment must not describe sockets we do not pass.
    let entries: Vec<_> = described
        .into_iter()
        .map(|p| server_starter_worker::port_env::PortEntry {
            key: p.key,
            fd: p.fd,
        })
        .collect();
    let port_env = crate::sockets::conventions::port_env_value(&entries);
    Ok((
        bound,
        WorkerSockets {
            layout,
            port_env,
            listen_env,
            info,
        },
    ))
}

/// Removes names no option matches any more from systemd's file descriptor store, and waits
/// until systemd has closed its copies: a bind to an overlapping address must not meet them.
fn retire_stored(notifier: &Notifier, stale: &[(String, String)]) {
    for (key, name) in stale {
        info!(
            "removing {name} (socket {key}) from systemd's file descriptor store: no option \
             matches it any more"
        );
        notifier.remove_fd(name);
    }
    if !stale.is_empty() {
        notifier.barrier();
    }
}

/// Keeps the sockets bound here in systemd's file descriptor store, so that a restart or a crash
/// of start_server finds them there and no connection is refused meanwhile.
fn store_bound(notifier: &Notifier, listeners: &[sockets::Listener]) {
    for listener in listeners {
        match &listener.origin {
            Origin::Stored(name) => {
                info!(
                    "using socket {} from systemd's file descriptor store ({name})",
                    listener.key
                );
            }
            Origin::Bound(name) if notifier.fd_store() => {
                if notifier.store_fd(name, listener.fd.as_fd()) {
                    info!(
                        "socket {} kept in systemd's file descriptor store as {name}",
                        listener.key
                    );
                }
            }
            Origin::Bound(_) | Origin::Unit => {}
        }
    }
}

/// At exit: the log command gets what is left in the pipe and a bounded time to write it (a
/// command between two runs is started once more for that).
fn flush_logger(mut logger: Logger, signals: &mut Signals) {
    logger.restart_now(Instant::now());
    output::close_stdio();
    if let Some(pid) = logger.pid() {
        drop(logger);
        event_loop::wait_for_logger(signals, pid, event_loop::LOGGER_GRACE);
    }
}

/// `LISTEN_FDS` and `LISTEN_FDNAMES` for the workers, when the sockets sit at fds 3, 4, ... as
/// the systemd convention requires (in fd order); `None`, with a notice, when `=FD` placed them
/// otherwise.
fn listen_fds_env(described: &[Placement]) -> Option<(String, String)> {
    if described.is_empty() {
        return None;
    }
    let mut by_fd: Vec<&Placement> = described.iter().collect();
    by_fd.sort_by_key(|p| p.fd);
    let start = server_starter_worker::listen_fds::START;
    if !by_fd.iter().zip(start..).all(|(p, want)| p.fd == want) {
        info!(
            "sockets are not at fds {start}..{} (--port=...=FD): workers get SERVER_STARTER_PORT \
             only, not LISTEN_FDS",
            start + described.len() as RawFd - 1
        );
        return None;
    }
    let names: Vec<&str> = by_fd.iter().map(|p| p.fdname.as_str()).collect();
    Some((described.len().to_string(), names.join(":")))
}

/// Raises the soft open-file limit to the hard one, so that many sockets (each held at a high fd,
/// see `spawn`) fit; returns the original limit, which workers get back.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(key: &str, fd: RawFd) -> Placement {
        Placement {
            key: key.into(),
            fd,
            fdname: crate::sockets::conventions::fdname_for(key),
        }
    }

    #[test]
    fn listen_fds_follow_fd_order_and_need_3_4_and_so_on() {
        let env = listen_fds_env(&[placed("80", 4), placed("/s", 3)]);
        assert_eq!(env, Some(("2".into(), "/s:80".into())));
        assert_eq!(listen_fds_env(&[placed("80", 3), placed("81", 5)]), None);
        assert_eq!(listen_fds_env(&[placed("80", 0)]), None);
        assert_eq!(listen_fds_env(&[]), None);
    }
}
