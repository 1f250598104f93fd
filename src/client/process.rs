//! `--restart` and `--stop` (and the helpers `--upgrade` shares): talking to a running
//! start_server through its pid and status files.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};

use crate::client::say;
use crate::config::cli::Cli;
use crate::error::{Error, Result};
use crate::vocab::Pid;
use crate::wire::pid_file::read_pid;
use crate::wire::status_file;

/// Fails unless a start_server holds the pid file's lock: a pid from a stale file might belong
/// to an unrelated process by now, and must not be signalled.
pub(super) fn running(file: File, pid: Pid, path: &Path) -> Result<File> {
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

/// `--stop`: SIGTERM to start_server, then wait (by taking the pid file's lock) until it exited.
pub fn stop(cli: &Cli) -> Result<()> {
    let path = cli
        .pid_file
        .as_deref()
        .ok_or_else(|| Error::usage("--stop needs --pid-file to find the server: give the running start_server's --pid-file"))?;
    let (file, pid) = read_pid(path)?;
    let file = running(file, pid, path)?;
    say(&format!(
        "stop_server (pid:{}) stopping now (pid:{pid})...",
        std::process::id()
    ));
    signal(pid, Signal::SIGTERM)?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::runtime(format!("flock failed({}): {}", path.display(), e)))?;
    Ok(())
}

/// `--restart`: SIGHUP to start_server, then wait until the status file lists exactly one
/// generation, newer than any listed before.
pub fn restart(cli: &Cli) -> Result<()> {
    let (Some(pid_path), Some(status_path)) = (cli.pid_file.as_deref(), cli.status_file.as_deref())
    else {
        return Err(Error::usage(
            "--restart needs --pid-file and --status-file to be set as well: give the running \
             start_server's --pid-file and --status-file",
        ));
    };
    let (file, pid) = read_pid(pid_path)?;
    let _file = running(file, pid, pid_path)?;
    let newest = *read_generations(status_path)?.last().ok_or_else(|| {
        Error::runtime(format!(
            "no active process found in the status file {}",
            status_path.display()
        ))
    })?;
    let changes = watch_directory_of(status_path)?;
    let exited = pidfd(pid)?;
    signal(pid, Signal::SIGHUP)?;
    loop {
        wait_for_change(&changes, &exited)?;
        if let Some(outcome) = outcome(status_path, newest, pid) {
            return outcome;
        }
        if has_exited(&exited) {
            return Err(Error::runtime(format!(
                "start_server (pid {pid}) exited before a new generation took over"
            )));
        }
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

/// Sleeps until a file changes in the watched directory or start_server exits.
fn wait_for_change(changes: &Inotify, exited: &OwnedFd) -> Result<()> {
    let mut fds = [
        PollFd::new(changes.as_fd(), PollFlags::POLLIN),
        PollFd::new(exited.as_fd(), PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(Error::runtime(format!("poll failed: {}", e.desc()))),
    }
    let _ = changes.read_events();
    Ok(())
}

/// How the restart ended, once it has: a generation newer than `newest` failed, or one took
/// over alone. `None` while neither happened.
fn outcome(status_path: &Path, newest: u64, pid: Pid) -> Option<Result<()>> {
    if let Some((generation, why)) =
        status_file::read_failure(status_path).filter(|(generation, _)| *generation > newest)
    {
        let serving = read_generations(status_path).unwrap_or_default();
        return Some(Err(Error::runtime(format!(
            "restart failed: generation {generation} did not start ({why}): generation {} is \
             still serving",
            serving.last().map_or("none".to_string(), u64::to_string)
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
