//! Where start_server's and the workers' output goes (`--log-file`): a file, or a command fed
//! through a pipe that start_server keeps open and restarts the command on.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::config::log_target::LogTarget;
use crate::error::{Context, Error, Result};
use crate::fs::guarded;
use crate::server::event::{Event, Source};
use crate::vocab::time::handover::Moments;
use crate::vocab::{ExitStatus, Pid, Secs};

/// The `--log-file` command and its pipe as an upgrade hands them over (moments as offsets from
/// the hand-over, see `vocab::time::handover`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerState {
    pub input: RawFd,
    pub output: (RawFd, RawFd),
    pub pid: Option<i32>,
    /// Since when the command runs.
    pub started: i64,
    pub quick_exits: u32,
    pub restart_at: Option<i64>,
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
            let file = guarded::open_guarded(
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
    pub fn export(&self, now: Instant) -> LoggerState {
        LoggerState {
            input: self.input.as_raw_fd(),
            output: (self.output[0].as_raw_fd(), self.output[1].as_raw_fd()),
            pid: self.pid,
            started: self.started.write(now),
            quick_exits: self.quick_exits,
            restart_at: self.restart_at.write(now),
        }
    }

    /// The log command an earlier image ran (see [`Logger::export`]).
    ///
    /// # Safety
    ///
    /// The state's fds must be the open pipe and outputs, owned by nothing else.
    pub unsafe fn adopt(command: String, state: &LoggerState, now: Instant) -> Logger {
        // SAFETY: the caller promises the fds are open and ours alone.
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        Logger {
            command,
            input: own(state.input),
            output: [own(state.output.0), own(state.output.1)],
            pid: state.pid,
            started: Instant::read(state.started, now),
            quick_exits: state.quick_exits,
            restart_at: Option::read(state.restart_at, now),
        }
    }

    /// The log command's own fds, kept open across an upgrade's exec.
    pub fn fds(state: &LoggerState) -> [RawFd; 3] {
        [state.input, state.output.0, state.output.1]
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
        let xfsz = crate::server::process::signals::child_xfsz();
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

/// The log command's restart is a timer of the event loop.
impl Source for Logger {
    fn deadline(&self) -> Option<Instant> {
        self.restart_due()
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, _: &mut Vec<Event>) -> Result<()> {
        self.restart_if_due(now);
        Ok(())
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
        crate::server::log::stderr::attach_stderr();
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
    crate::server::log::stderr::attach_stderr();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_command_backoff_doubles_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
