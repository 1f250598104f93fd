//! Why an upgrade in place did not happen: told in the log, to systemd, in `{PID_FILE}.upgrade`
//! and to the control clients that asked; start_server runs on as it was.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

/// Why an upgrade did not happen.
#[derive(Debug)]
pub enum Refusal {
    /// A terminating signal was received.
    Stopping,
    /// The binary at start_server's path could be another user's.
    Untrusted { binary: PathBuf, why: String },
    /// The new binary could not be started for its check.
    CannotRun {
        binary: PathBuf,
        error: std::io::Error,
    },
    /// Its check did not finish in time.
    CheckTimedOut { binary: PathBuf, limit: Duration },
    /// Its check exited with an error (the last line it said on stderr).
    CheckFailed {
        binary: PathBuf,
        status: std::process::ExitStatus,
        said: String,
    },
    /// It does not read the state format this image writes.
    FormatNotRead {
        binary: PathBuf,
        format: u32,
        reads: Vec<u32>,
    },
    /// The state could not be made (encoded, or written to its memfd).
    State(String),
    /// A descriptor could not be kept open across the exec.
    KeepOpen { fd: RawFd, error: std::io::Error },
    /// A path or argument holds a NUL byte.
    NulByte(&'static str),
    /// `execve` failed.
    Exec {
        binary: PathBuf,
        error: nix::errno::Errno,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "start_server is stopping"),
            Refusal::Untrusted { binary, why } => write!(
                f,
                "not running {}: {why}: an upgrade runs only a binary that no user but root or \
                 start_server's own can change",
                binary.display()
            ),
            Refusal::CannotRun { binary, error } => {
                write!(f, "cannot run {}: {error}", binary.display())
            }
            Refusal::CheckTimedOut { binary, limit } => write!(
                f,
                "{} --upgrade-check did not answer within {} secs",
                binary.display(),
                limit.as_secs()
            ),
            Refusal::CheckFailed {
                binary,
                status,
                said,
            } => {
                write!(f, "{} --upgrade-check failed ({status})", binary.display())?;
                if !said.is_empty() {
                    write!(f, ": {said}")?;
                }
                Ok(())
            }
            Refusal::FormatNotRead {
                binary,
                format,
                reads,
            } => write!(
                f,
                "{} does not read upgrade state format {format} (it reads: {})",
                binary.display(),
                if reads.is_empty() {
                    "none".to_string()
                } else {
                    format!("{reads:?}")
                }
            ),
            Refusal::State(why) => f.write_str(why),
            Refusal::KeepOpen { fd, error } => {
                write!(f, "cannot keep fd {fd} open across the exec: {error}")
            }
            Refusal::NulByte(what) => write!(f, "{what} contains a NUL byte"),
            Refusal::Exec { binary, error } => {
                write!(
                    f,
                    "failed to execute {}: {}",
                    binary.display(),
                    error.desc()
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}
