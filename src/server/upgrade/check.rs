//! `--upgrade-check`: before start_server executes a new binary, that binary is run with the same
//! options and this flag; it must accept the options, and say its version, the state formats it
//! reads and whether it can roll back ([`report`]).
//!
//! The check is a child of start_server that the event loop waits for like any other source:
//! its output comes through non-blocking pipes, its exit through SIGCHLD, and its time is
//! bounded ([`CHECK_TIMEOUT`]: then its whole process group is killed). Signals, requests and
//! workers are served meanwhile; a stop cancels it.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::PollFlags;

use super::image::{Binary, Image};
use super::refusal::Refusal;
use super::state::{FORMAT, READS};
use super::version::version;
use crate::error::Result;
use crate::server::event::{Event, Source};
use crate::vocab::{ExitStatus, Pid};
use crate::wire::upgrade_report::CHECK_TIMEOUT;

/// The most of each output kept: enough for the report and an error's last line.
const OUTPUT_MAX: usize = 64 * 1024;

/// What this binary says when checked: its version, the formats it reads, and that it takes a
/// way back (`--upgrade-rollback`).
pub fn report() -> String {
    let formats: Vec<String> = READS.iter().map(u32::to_string).collect();
    format!(
        "start_server {}\nupgrade-state-formats: {}\nupgrade-rollback: yes\n",
        version(),
        formats.join(" ")
    )
}

/// What a passed check found.
#[derive(Debug)]
pub struct Passed {
    /// The new binary's version.
    pub version: String,
    /// It takes `--upgrade-rollback` (older ones do not).
    pub rollback: bool,
    /// The binary, open: the one executed next.
    pub binary: Binary,
}

/// A check under way.
#[derive(Debug)]
pub struct Check {
    binary: Binary,
    path: std::path::PathBuf,
    pid: Pid,
    /// Standard output and error: the pipe (until end of file) and what came.
    outputs: [(Option<OwnedFd>, Vec<u8>); 2],
    status: Option<ExitStatus>,
    deadline: Instant,
    /// The loop has been told it is over.
    told: bool,
}

impl Check {
    /// Starts `binary --upgrade-check ARGS...` in a process group of its own.
    pub fn start(
        image: &Image,
        binary: Binary,
        now: Instant,
    ) -> std::result::Result<Check, Refusal> {
        let cannot = |error: std::io::Error| Refusal::CannotRun {
            binary: image.binary.clone(),
            error,
        };
        let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes().to_vec());
        let mut argv = Vec::with_capacity(image.argv.len() + 1);
        argv.extend(image.argv.first().map(|a| c(a)));
        argv.push(CString::new("--upgrade-check"));
        argv.extend(image.argv.iter().skip(1).map(|a| c(a)));
        let argv = argv
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Refusal::NulByte("the command line"))?;
        let env = super::environment();
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK);
        let (out_read, out_write) = pipe().map_err(|e| cannot(e.into()))?;
        let (err_read, err_write) = pipe().map_err(|e| cannot(e.into()))?;
        let (report_read, report_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| cannot(e.into()))?;
        let null = std::fs::File::open("/dev/null").map_err(cannot)?;
        let child = Child {
            binary: &binary,
            argv: &argv,
            env: &env,
            stdin: null.as_fd(),
            stdout: out_write.as_fd(),
            stderr: err_write.as_fd(),
            report: report_write.as_fd(),
        };
        let pid = child.spawn().map_err(|e| cannot(e.into()))?;
        drop((out_write, err_write, report_write));
        let mut errno = [0u8; 4];
        if read_full(&report_read, &mut errno) == errno.len() {
            // The exec failed; the child is in _exit: reaped here, never taken for a stray.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return Err(cannot(std::io::Error::from_raw_os_error(
                i32::from_ne_bytes(errno),
            )));
        }
        Ok(Check {
            binary,
            path: image.binary.clone(),
            pid,
            outputs: [(Some(out_read), Vec::new()), (Some(err_read), Vec::new())],
            status: None,
            deadline: now + CHECK_TIMEOUT,
            told: false,
        })
    }

    /// The check's process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The check's process exited with `status`.
    pub fn exited(&mut self, status: ExitStatus) {
        self.status = Some(status);
    }

    /// Over: exited, and all it wrote read.
    fn done(&self) -> bool {
        self.status.is_some() && self.outputs.iter().all(|(fd, _)| fd.is_none())
    }

    /// Stops the check and whatever it started (its process group).
    pub fn kill(&self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// How the check went, once [`Event::UpgradeChecked`] said it is over.
    pub fn verdict(self) -> std::result::Result<Passed, Refusal> {
        let binary = || self.path.clone();
        let Some(status) = self.status.filter(|_| self.done()) else {
            self.kill();
            return Err(Refusal::CheckTimedOut {
                binary: binary(),
                limit: CHECK_TIMEOUT,
            });
        };
        let stdout = String::from_utf8_lossy(&self.outputs[0].1).into_owned();
        let stderr = String::from_utf8_lossy(&self.outputs[1].1).into_owned();
        let status =
            <std::process::ExitStatus as std::os::unix::process::ExitStatusExt>::from_raw(status.0);
        if !status.success() {
            let said = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(Refusal::CheckFailed {
                binary: binary(),
                status,
                said: said.to_string(),
            });
        }
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let reads: Vec<u32> = field("upgrade-state-formats:")
            .map(|list| {
                list.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if !reads.contains(&FORMAT) {
            return Err(Refusal::FormatNotRead {
                binary: binary(),
                format: FORMAT,
                reads,
            });
        }
        Ok(Passed {
            version: field("start_server ")
                .unwrap_or("(unknown version)")
                .to_string(),
            rollback: field("upgrade-rollback:") == Some("yes"),
            binary: self.binary,
        })
    }

    /// Reads what the pipes hold now; a pipe at end of file (or failing) is closed.
    fn read_outputs(&mut self) {
        for (fd, bytes) in &mut self.outputs {
            let Some(pipe) = fd else { continue };
            let mut buffer = [0u8; 4096];
            loop {
                match nix::unistd::read(pipe.as_fd(), &mut buffer) {
                    Ok(0) => {
                        *fd = None;
                        break;
                    }
                    Ok(n) => {
                        let room = OUTPUT_MAX.saturating_sub(bytes.len());
                        bytes.extend_from_slice(&buffer[..n.min(room)]);
                    }
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => break,
                    Err(_) => {
                        *fd = None;
                        break;
                    }
                }
            }
        }
    }
}

/// The check's pipes are waited on, its deadline kept: it is over once it exited and closed
/// them, or at the deadline.
impl Source for Check {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.outputs
            .iter()
            .filter_map(|(fd, _)| fd.as_ref())
            .map(|fd| (fd.as_fd(), PollFlags::POLLIN))
            .collect()
    }

    fn deadline(&self) -> Option<Instant> {
        match (self.told, self.done()) {
            (true, _) => None,
            // Over since its exit was reaped (after its pipes closed): no fd will wake the
            // loop for it, so it asks to be seen at once.
            (false, true) => Some(self.deadline - CHECK_TIMEOUT),
            (false, false) => Some(self.deadline),
        }
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, events: &mut Vec<Event>) -> Result<()> {
        self.read_outputs();
        if !self.told && (self.done() || now >= self.deadline) {
            self.told = true;
            events.push(Event::UpgradeChecked);
        }
        Ok(())
    }
}

/// Reads until `buffer` is full or the pipe closes; how many bytes came.
fn read_full(fd: &OwnedFd, buffer: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buffer.len() {
        match nix::unistd::read(fd.as_fd(), &mut buffer[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    got
}

/// The check's process, prepared before fork.
struct Child<'a> {
    binary: &'a Binary,
    argv: &'a [CString],
    env: &'a [CString],
    stdin: BorrowedFd<'a>,
    stdout: BorrowedFd<'a>,
    stderr: BorrowedFd<'a>,
    /// Written the exec's errno if it fails (close-on-exec: closed by a good exec).
    report: BorrowedFd<'a>,
}

impl Child<'_> {
    /// Forks; the child joins a process group of its own, takes the pipes as its output, gets
    /// the default signal mask and SIGPIPE back, and executes the binary from its fd.
    fn spawn(&self) -> std::result::Result<Pid, Errno> {
        let argv: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const libc::c_char> = self
            .env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let fds = [
            self.stdin.as_raw_fd(),
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
        ];
        let (binary, script, report) = (
            self.binary.fd.as_raw_fd(),
            self.binary.script,
            self.report.as_raw_fd(),
        );
        // SAFETY: start_server is single-threaded; the child makes only async-signal-safe
        // calls on data prepared above, and leaves through execveat or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Errno::last());
        }
        if pid == 0 {
            // SAFETY: in the child of fork, as above.
            unsafe {
                libc::setpgid(0, 0);
                for (target, &fd) in fds.iter().enumerate() {
                    libc::dup2(fd, target as libc::c_int);
                }
                if script {
                    libc::fcntl(binary, libc::F_SETFD, 0);
                }
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::syscall(
                    libc::SYS_execveat,
                    binary,
                    c"".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                let errno = (*libc::__errno_location()).to_ne_bytes();
                libc::write(report, errno.as_ptr().cast(), errno.len());
                libc::_exit(127)
            }
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_version_the_formats_and_the_way_back() {
        assert!(report().starts_with(&format!("start_server {}\n", version())));
        assert!(report().contains("\nupgrade-state-formats: 1 2 3 4\n"));
        assert!(report().ends_with("\nupgrade-rollback: yes\n"));
    }

    #[test]
    fn a_check_over_once_its_exit_is_reaped_wakes_the_loop_at_once() {
        let started = Instant::now();
        let binary = Binary {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            script: false,
        };
        let mut check = Check {
            binary,
            path: "/usr/bin/start_server".into(),
            pid: 1,
            outputs: [(None, Vec::new()), (None, Vec::new())],
            status: None,
            deadline: started + CHECK_TIMEOUT,
            told: false,
        };
        assert_eq!(check.deadline(), Some(started + CHECK_TIMEOUT));
        // Its pipes closed earlier; the exit comes last and no fd is left to wake the loop.
        check.exited(ExitStatus(0));
        assert!(check.deadline().is_some_and(|d| d <= Instant::now()));
        let mut events = Vec::new();
        check.on_ready(&[], Instant::now(), &mut events).unwrap();
        assert!(matches!(events.as_slice(), [Event::UpgradeChecked]));
        assert_eq!(check.deadline(), None);
    }
}
