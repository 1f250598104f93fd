//! `--restart` and `--stop` (and the helpers `--upgrade` shares): talking to a running
//! start_server through its pid and status files. Every wait is bounded (`--timeout`).

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};

use crate::client::{evidence, say};
use crate::config::cli::Cli;
use crate::error::{Error, Result};
use crate::vocab::{Pid, Secs};
use crate::wire::pid_file::read_pid;
use crate::wire::status_file;

/// How long `--stop` and `--restart` wait by default: systemd's own default for a stop or a
/// reload command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// The running start_server of the pid file at `path`, confirmed (see `evidence`), with the
/// open pid file (whose lock it holds).
pub(super) fn running_server(path: &Path) -> Result<(File, Pid)> {
    let (file, pid) = read_pid(path)?;
    let file = locked(file, pid, path)?;
    evidence::confirm(&file, pid, path)?;
    Ok((file, pid))
}

/// Fails unless some process holds the pid file's lock: a pid from a stale file might belong
/// to an unrelated process by now, and must not be signalled.
fn locked(file: File, pid: Pid, path: &Path) -> Result<File> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => Err(Error::runtime(format!(
            "no start_server is running with pid file {} (pid {pid} is gone): remove the stale \
             file",
            path.display()
        ))),
        Err((file, Errno::EWOULDBLOCK)) => Ok(file),
        Err((_, e)) => Err(Error::runtime(format!(
            "failed to check the lock of {}: {}",
            path.display(),
            e.desc()
        ))),
    }
}

pub(super) fn signal(pid: Pid, signal: Signal) -> Result<()> {
    kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
        Error::runtime(format!(
            "failed to send SIG{} to the server process {pid}: {}",
            crate::vocab::signal::short_name(signal),
            e.desc()
        ))
    })
}

/// `--stop`: SIGTERM to start_server, then wait until it exited (bounded by `--timeout`).
pub fn stop(cli: &Cli) -> Result<()> {
    let path = cli.pid_file.as_deref().ok_or_else(|| {
        Error::usage(
            "--stop needs --pid-file to find the server: give the running start_server's \
             --pid-file",
        )
    })?;
    let limit = cli.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let (file, pid) = running_server(path)?;
    let exited = pidfd(pid)?;
    say(&format!(
        "stop_server (pid:{}) stopping now (pid:{pid})...",
        std::process::id()
    ));
    signal(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + limit;
    while !has_exited(&exited) {
        if Instant::now() >= deadline {
            return Err(Error::runtime(format!(
                "start_server (pid {pid}) is still stopping after {} (--timeout): its workers \
                 may not have exited yet; it goes on stopping",
                Secs(limit)
            )));
        }
        wait_for(&[exited.as_fd()], deadline)?;
    }
    // Gone: its lock went with it (taking it confirms nothing else holds the file).
    let _ = Flock::lock(file, FlockArg::LockExclusiveNonblock);
    Ok(())
}

/// `--restart`: SIGHUP to start_server, then wait until the status file lists exactly one
/// generation, newer than any listed before (bounded by `--timeout`).
pub fn restart(cli: &Cli) -> Result<()> {
    let (Some(pid_path), Some(status_path)) = (cli.pid_file.as_deref(), cli.status_file.as_deref())
    else {
        return Err(Error::usage(
            "--restart needs --pid-file and --status-file to be set as well: give the running \
             start_server's --pid-file and --status-file",
        ));
    };
    let limit = cli.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let (_file, pid) = running_server(pid_path)?;
    let newest = *read_generations(status_path)?.last().ok_or_else(|| {
        Error::runtime(format!(
            "no active process found in the status file {}",
            status_path.display()
        ))
    })?;
    let changes = watch_directory_of(status_path)?;
    let exited = pidfd(pid)?;
    signal(pid, Signal::SIGHUP)?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(outcome) = outcome(status_path, newest, pid) {
            return outcome;
        }
        if has_exited(&exited) {
            return Err(Error::runtime(format!(
                "start_server (pid {pid}) exited before a new generation took over"
            )));
        }
        if Instant::now() >= deadline {
            let listed = read_generations(status_path).unwrap_or_default();
            return Err(Error::runtime(format!(
                "gave up after {} (--timeout): generations {listed:?} are still live (an old \
                 one that does not exit on --signal-on-hup keeps a restart from ending; see \
                 --kill-old-timeout)",
                Secs(limit)
            )));
        }
        wait_for(&[changes.as_fd(), exited.as_fd()], deadline)?;
        let _ = changes.read_events();
    }
}

/// The generations the status file lists, ascending.
fn read_generations(status_path: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(status_path).map_err(|e| {
        Error::runtime(format!(
            "failed to open status file {}: {e}",
            status_path.display()
        ))
    })?;
    Ok(status_file::generations(&text))
}

/// Both the status file and its failure file are renamed into place in the status file's
/// directory: watching it (and the process itself, a pidfd) replaces polling.
pub(super) fn watch_directory_of(status_path: &Path) -> Result<Inotify> {
    let directory = match status_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .and_then(|watch| {
            watch.add_watch(
                directory,
                AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
            )?;
            Ok(watch)
        })
        .map_err(|e| {
            Error::runtime(format!(
                "cannot watch {}: {}",
                directory.display(),
                e.desc()
            ))
        })
}

/// Sleeps until one of `fds` is readable or `deadline` passes.
pub(super) fn wait_for(fds: &[std::os::fd::BorrowedFd<'_>], deadline: Instant) -> Result<()> {
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
    match poll(&mut polled, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::runtime(format!("poll failed: {}", e.desc()))),
    }
}

/// How the restart ended, once it has: a generation newer than `newest` failed, or one took
/// over alone. `None` while neither happened.
fn outcome(status_path: &Path, newest: u64, pid: Pid) -> Option<Result<()>> {
    if let Some((generation, why)) =
        status_file::read_failure(status_path).filter(|(generation, _)| *generation > newest)
    {
        let serving = read_generations(status_path).unwrap_or_default();
        let serving = serving.last().map_or("none".to_string(), u64::to_string);
        // A rollback's note says what happened itself (`rolled back: generation N failed
        // during the bake: ...`).
        if why.starts_with("rolled back: ") {
            return Some(Err(Error::runtime(format!(
                "restart failed: {why}: generation {serving} is still serving"
            ))));
        }
        return Some(Err(Error::runtime(format!(
            "restart failed: generation {generation} did not start ({why}): generation {serving} \
             is still serving"
        ))));
    }
    // The file is replaced atomically, but is absent between start-up and generation 1.
    if let Ok(gens) = read_generations(status_path)
        && gens.len() == 1
        && gens[0] > newest
    {
        say(&format!(
            "start_server (pid:{pid}) restarted: generation {} is serving",
            gens[0]
        ));
        return Some(Ok(()));
    }
    None
}

/// A descriptor that becomes readable when process `pid` exits.
pub(super) fn pidfd(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open has no memory arguments; the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::runtime(format!(
            "cannot watch start_server (pid {pid}): {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a non-negative result is a new descriptor that nothing else owns or closes.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd has exited, without waiting.
pub(super) fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}
