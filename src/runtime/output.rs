//! Where start_server's and the workers' output goes (`--log-file`), and `--daemonize`.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::config::Secs;
use crate::error::{Context, Error, Result};
use crate::runtime::files;
use crate::supervisor::{ExitStatus, Pid};

/// The `--log-file` value: a file to append to, or `| COMMAND` to pipe into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Append to this file.
    File(PathBuf),
    /// Feed this shell command's standard input.
    Command(String),
}

impl LogTarget {
    /// Reads the option's value the way the original does: a leading `|` means a command.
    pub fn parse(value: &str) -> LogTarget {
        match value.trim_start().strip_prefix('|') {
            Some(command) => LogTarget::Command(command.trim_start().to_string()),
            None => LogTarget::File(PathBuf::from(value)),
        }
    }
}

/// An opened log destination, not yet in place of stdout and stderr.
#[derive(Debug)]
pub struct LogOutput {
    fd: OwnedFd,
    logger: Option<Logger>,
}

/// The `--log-file` command and the pipe it reads. start_server keeps the pipe's read end, so
/// that while the command is gone workers' writes neither fail nor raise SIGPIPE, and what they
/// wrote meanwhile is read by the command started next.
#[derive(Debug)]
pub struct Logger {
    command: String,
    input: OwnedFd,
    /// start_server's stdout and stderr from before the redirection, the command's own.
    output: [OwnedFd; 2],
    pid: Option<Pid>,
    started: Instant,
    /// Exits in a row, each after less than [`STEADY`].
    quick_exits: u32,
    restart_at: Option<Instant>,
}

/// A log command that ran this long before it exited is restarted at once.
const STEADY: Duration = Duration::from_secs(60);
/// The longest wait before starting a failing log command again.
const LONGEST_BACKOFF: Duration = Duration::from_secs(60);

/// Opens the file or starts the command (with `sh -c`).
pub fn open(target: &LogTarget) -> Result<LogOutput> {
    match target {
        LogTarget::File(path) => {
            let file = files::open_guarded(
                OpenOptions::new().append(true).create(true),
                path,
                "log file",
            )?;
            Ok(LogOutput {
                fd: file.into(),
                logger: None,
            })
        }
        LogTarget::Command(command) => {
            let context = || format!("failed to open pipe:| {command}");
            let (input, fd) = pipe().context(context)?;
            let output = [
                dup_cloexec(1).context(context)?,
                dup_cloexec(2).context(context)?,
            ];
            let mut logger = Logger {
                command: command.clone(),
                input,
                output,
                pid: None,
                started: Instant::now(),
                quick_exits: 0,
                restart_at: None,
            };
            logger.pid = Some(logger.spawn().map_err(|e| match e.kind() {
                // A scratch container image has no shell.
                std::io::ErrorKind::NotFound => Error::runtime(format!(
                    "{}: a log command runs with /bin/sh, which is missing: log to stderr or \
                     to a file instead",
                    context()
                )),
                _ => Error::runtime(format!("{}: {e}", context())),
            })?);
            Ok(LogOutput {
                fd,
                logger: Some(logger),
            })
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Makes standard descriptor `target` (0, 1 or 2) a copy of `fd`.
pub fn dup_onto_standard(fd: impl AsFd, target: RawFd) -> nix::Result<()> {
    match target {
        0 => nix::unistd::dup2_stdin(fd),
        1 => nix::unistd::dup2_stdout(fd),
        2 => nix::unistd::dup2_stderr(fd),
        _ => Err(nix::errno::Errno::EINVAL),
    }
}

/// A close-on-exec copy of standard descriptor `fd` (1 or 2), above the standard ones (std's
/// `try_clone_to_owned` uses `F_DUPFD_CLOEXEC` from 3).
fn dup_cloexec(fd: RawFd) -> std::io::Result<OwnedFd> {
    match fd {
        1 => std::io::stdout().as_fd().try_clone_to_owned(),
        _ => std::io::stderr().as_fd().try_clone_to_owned(),
    }
}

impl Logger {
    /// What an upgrade in place hands to the next image: the pipe's fds, the command's pid and
    /// its restart pacing, times relative to `now`.
    pub fn export(&self, now: Instant) -> crate::runtime::upgrade::LoggerState {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        crate::runtime::upgrade::LoggerState {
            input: self.input.as_raw_fd(),
            output: (self.output[0].as_raw_fd(), self.output[1].as_raw_fd()),
            pid: self.pid,
            started: -micros(now.saturating_duration_since(self.started)),
            quick_exits: self.quick_exits,
            restart_at: self
                .restart_at
                .map(|at| micros(at.saturating_duration_since(now))),
        }
    }

    /// The log command an earlier image ran (see [`Logger::export`]).
    ///
    /// # Safety
    ///
    /// The state's fds must be the open pipe and outputs, owned by nothing else.
    pub unsafe fn adopt(
        command: String,
        state: &crate::runtime::upgrade::LoggerState,
        now: Instant,
    ) -> Logger {
        let offset = |us: i64| Duration::from_micros(us.unsigned_abs());
        // SAFETY: the caller promises the fds are open and ours alone.
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        Logger {
            command,
            input: own(state.input),
            output: [own(state.output.0), own(state.output.1)],
            pid: state.pid,
            started: now.checked_sub(offset(state.started)).unwrap_or(now),
            quick_exits: state.quick_exits,
            restart_at: state.restart_at.map(|us| now + offset(us)),
        }
    }

    /// The running command's pid.
    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// When the command is due to be started again, if it is not running.
    pub fn restart_due(&self) -> Option<Instant> {
        self.restart_at
    }

    /// The command exited: schedules its restart, at once after a long run, else after a wait
    /// that doubles with every quick exit in a row.
    pub fn exited(&mut self, status: ExitStatus, now: Instant) {
        self.pid = None;
        if now.duration_since(self.started) >= STEADY {
            self.quick_exits = 0;
        }
        let delay = self.schedule_restart(now);
        warn!(
            "the log command exited, status:{status}; starting it again in {}",
            Secs(delay)
        );
    }

    /// The next start, after a wait that doubles with every quick exit (or failed start) in a
    /// row; returns the wait.
    fn schedule_restart(&mut self, now: Instant) -> Duration {
        let delay = backoff(self.quick_exits);
        self.quick_exits = self.quick_exits.saturating_add(1);
        self.restart_at = Some(now + delay);
        delay
    }

    /// Starts the command again if its time has come.
    pub fn restart_if_due(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|due| now >= due) {
            self.restart_now(now);
        }
    }

    /// Starts the command if it is not running (at exit too, so that it reads what is left).
    pub fn restart_now(&mut self, now: Instant) {
        if self.pid.is_some() {
            return;
        }
        match self.spawn() {
            Ok(pid) => {
                self.restart_at = None;
                self.started = now;
                self.pid = Some(pid);
                info!("log command started again (pid:{pid})");
            }
            Err(e) => {
                let delay = self.schedule_restart(now);
                error!(
                    "failed to start the log command again: {e}; next try in {}",
                    Secs(delay)
                );
            }
        }
    }

    /// `sh -c COMMAND` reading the pipe, writing where start_server wrote before `--log-file`,
    /// with default SIGPIPE and SIGXFSZ as inherited (std resets the signal mask and SIGPIPE).
    fn spawn(&self) -> std::io::Result<Pid> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::from(self.input.try_clone()?))
            .stdout(Stdio::from(self.output[0].try_clone()?))
            .stderr(Stdio::from(self.output[1].try_clone()?));
        let xfsz = crate::runtime::signals::child_xfsz();
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, xfsz);
                Ok(())
            });
        }
        Ok(command.spawn()?.id() as Pid)
    }
}

/// 1 s, 2 s, 4 s... up to [`LONGEST_BACKOFF`].
fn backoff(quick_exits: u32) -> Duration {
    Duration::from_secs(1u64 << quick_exits.min(6)).min(LONGEST_BACKOFF)
}

impl LogOutput {
    /// Puts the log in place of stdout and stderr (which workers inherit); returns the log
    /// command, if there is one.
    pub fn redirect_stdio(self) -> Result<Option<Logger>> {
        for target in [1, 2] {
            dup_onto_standard(&self.fd, target)
                .context(|| "failed to redirect output to the log".to_string())?;
        }
        crate::runtime::logging::attach_stderr();
        Ok(self.logger)
    }
}

/// Points stdout and stderr at /dev/null, so that a log command sees end-of-file.
pub fn close_stdio() {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        for target in [1, 2] {
            if let Err(e) = dup_onto_standard(&null, target) {
                warn!("failed to point fd {target} at /dev/null: {}", e.desc());
            }
        }
    }
    crate::runtime::logging::attach_stderr();
}

/// Fork, setsid, fork: the parents leave with `_exit(0)` (so they remove no socket file), the
/// grandchild goes on with standard input from /dev/null. (The original keeps stdin when a socket
/// sits at fd 0; here sockets reach fd 0 only in the worker, so that case needs nothing.)
pub fn daemonize() -> Result<()> {
    for round in 0..2 {
        // SAFETY: start_server is single-threaded here (no thread holds a lock the child could
        // need), and the parent only calls _exit. (nix's fork is just as unsafe and adds nothing
        // for a parent that leaves at once.)
        match unsafe { libc::fork() } {
            -1 => {
                return Err(std::io::Error::last_os_error()).context(|| "fork failed".into());
            }
            0 => {}
            // SAFETY: the parent leaves at once, without running destructors (which would remove
            // the socket files the daemon keeps).
            _ => unsafe { libc::_exit(0) },
        }
        if round == 0 {
            nix::unistd::setsid().context(|| "setsid failed".to_string())?;
        }
    }
    let null = OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .context(|| "failed to open /dev/null".to_string())?;
    if let Err(e) = dup_onto_standard(&null, 0) {
        warn!("failed to point stdin at /dev/null: {}", e.desc());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_command_backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn pipe_or_file() {
        assert_eq!(
            LogTarget::parse(" | logger -t app"),
            LogTarget::Command("logger -t app".into())
        );
        assert_eq!(
            LogTarget::parse("/var/log/app.log"),
            LogTarget::File("/var/log/app.log".into())
        );
    }
}
