//! Where start_server's and the workers' output goes (`--log-file`), and `--daemonize`.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};
use crate::files;
use crate::supervisor::Pid;

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
    logger: Option<Pid>,
}

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
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::piped())
                .spawn()
                .map_err(|e| match e.kind() {
                    // A scratch container image has no shell.
                    std::io::ErrorKind::NotFound => Error::runtime(format!(
                        "failed to open pipe:| {command}: a log command runs with /bin/sh, \
                         which is missing; log to stderr or to a file instead"
                    )),
                    _ => Error::runtime(format!("failed to open pipe:| {command}: {e}")),
                })?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| Error::runtime("no pipe to the log command"))?;
            Ok(LogOutput {
                fd: stdin.into(),
                logger: Some(child.id() as Pid),
            })
        }
    }
}

impl LogOutput {
    /// Puts the log in place of stdout and stderr (which workers inherit); returns the pid of
    /// the log command, if there is one.
    pub fn redirect_stdio(self) -> Result<Option<Pid>> {
        for target in [1, 2] {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            if unsafe { libc::dup2(self.fd.as_raw_fd(), target) } < 0 {
                return Err(std::io::Error::last_os_error())
                    .context(|| "failed to redirect output to the log".to_string());
            }
        }
        Ok(self.logger)
    }
}

/// Points stdout and stderr at /dev/null, so that a log command sees end-of-file.
pub fn close_stdio() {
    if let Ok(null) = OpenOptions::new().write(true).open("/dev/null") {
        for target in [1, 2] {
            // SAFETY: as above.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// Fork, setsid, fork: the parents leave with `_exit(0)` (so they remove no socket file), the
/// grandchild goes on with standard input from /dev/null. (The original keeps stdin when a socket
/// sits at fd 0; here sockets reach fd 0 only in the worker, so that case needs nothing.)
pub fn daemonize() -> Result<()> {
    for round in 0..2 {
        // SAFETY: single-threaded; the parent only calls _exit.
        match unsafe { libc::fork() } {
            -1 => {
                return Err(std::io::Error::last_os_error()).context(|| "fork failed".into());
            }
            0 => {}
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
    // SAFETY: replacing our own standard input.
    unsafe { libc::dup2(null.as_raw_fd(), 0) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
