//! Processes as the kernel names them: a pid, and the raw wait status a process ended with.

use std::fmt;

/// A process id, as the kernel gives it.
pub type Pid = i32;

/// A raw wait status (the kernel's encoding, as Perl's `$?`), printed as the original prints it
/// plus what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ExitStatus(pub i32);

impl ExitStatus {
    /// The short form status replies use: `exit 3`, `signal 9`, `signal 11 (core dumped)`.
    pub fn brief(self) -> String {
        let raw = self.0;
        if libc::WIFEXITED(raw) {
            format!("exit {}", libc::WEXITSTATUS(raw))
        } else if libc::WIFSIGNALED(raw) {
            let core = if libc::WCOREDUMP(raw) {
                " (core dumped)"
            } else {
                ""
            };
            format!("signal {}{core}", libc::WTERMSIG(raw))
        } else {
            format!("status {raw}")
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = self.0;
        let signal = raw & 0x7f;
        if signal == 0 {
            write!(f, "{raw} (exit code {})", (raw >> 8) & 0xff)
        } else {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str())
                .unwrap_or("?");
            write!(f, "{raw} (killed by {name})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_original_prints_them_and_briefly() {
        assert_eq!(ExitStatus(3 << 8).to_string(), "768 (exit code 3)");
        assert_eq!(ExitStatus(9).to_string(), "9 (killed by SIGKILL)");
        assert_eq!(ExitStatus(3 << 8).brief(), "exit 3");
        assert_eq!(ExitStatus(9).brief(), "signal 9");
        assert_eq!(ExitStatus(11 | 0x80).brief(), "signal 11 (core dumped)");
    }
}
