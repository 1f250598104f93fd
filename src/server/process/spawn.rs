//! Forking and exec'ing a worker with exactly the descriptors it should have.
//!
//! The sockets live in start_server above every fd a worker is meant to see them at (the
//! *floor*), close-on-exec. Between fork and exec the child only makes system calls: `chdir`,
//! one `dup2` per socket to its place (which clears close-on-exec there), restoring the open-file
//! limit, an empty signal mask, default SIGPIPE and SIGXFSZ as inherited, then `execve` with an
//! argv and envp built beforehand. Everything else start_server holds is close-on-exec, so the
//! worker sees fds 0, 1, 2 and its sockets, nothing more. An error before exec comes back through
//! a close-on-exec pipe. With a cgroup, the worker is created in it (`clone3(CLONE_INTO_CGROUP)`),
//! or, where the kernel cannot, joins it before anything else.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

use crate::config::program::ResolveError;
use crate::sockets::placement::{FdLayout, dup_above};
use crate::vocab::Pid;

/// A worker's command line, environment and directory, ready for exec.
#[derive(Debug)]
pub struct Launch {
    /// Path to exec (already looked up in PATH).
    pub program: CString,
    /// argv, starting with the name as the operator gave it.
    pub argv: Vec<CString>,
    /// `NAME=VALUE` entries.
    pub env: Vec<CString>,
    /// Directory to change to first.
    pub dir: Option<CString>,
    /// Open-file limit to give back to the worker (start_server raises its own).
    pub nofile: libc::rlimit,
    /// Add `LISTEN_PID=<the worker's pid>` to the environment (known only after fork).
    pub listen_pid: bool,
    /// Add `WATCHDOG_PID=<the worker's pid>` (`--worker-watchdog`), known only after fork.
    pub watchdog_pid: bool,
    /// SIGXFSZ's disposition in the worker (start_server ignores it for itself).
    pub xfsz: libc::sighandler_t,
    /// The cgroup to start it in: its directory and its `cgroup.procs`, open.
    pub cgroup: Option<(RawFd, RawFd)>,
}

/// Turns an OS string into a C string, refusing interior NULs with an error naming `what`.
pub fn c_string(value: OsString, what: &'static str) -> std::result::Result<CString, SpawnError> {
    CString::new(value.into_vec()).map_err(|_| SpawnError::NulByte(what))
}

/// Why a worker could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The program cannot be found or run.
    Program(ResolveError),
    /// The program path, an argument or `--dir` holds a NUL byte (named).
    NulByte(&'static str),
    /// The pipe the child reports exec failures through could not be made.
    ReportPipe(std::io::Error),
    /// fork(2) failed (process or memory limits).
    Fork(std::io::Error),
    /// The child could not change to `--dir`.
    Chdir { dir: String, error: std::io::Error },
    /// The child could not move a socket to its file descriptor.
    PlaceSocket(std::io::Error),
    /// execve(2) failed.
    Exec {
        program: String,
        error: std::io::Error,
    },
    /// The child could not join its cgroup.
    Cgroup(std::io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Program(e) => write!(f, "{e}"),
            SpawnError::NulByte(what) => write!(f, "{what} contains a NUL byte"),
            SpawnError::ReportPipe(e) => {
                write!(
                    f,
                    "failed to create the pipe to watch the worker's exec: {e}"
                )
            }
            SpawnError::Fork(e) => write!(f, "fork failed: {e}"),
            SpawnError::Chdir { dir, error } => write!(f, "failed to chdir to {dir}: {error}"),
            SpawnError::PlaceSocket(e) => {
                write!(f, "failed to place a socket at its file descriptor: {e}")
            }
            SpawnError::Exec { program, error } => write!(f, "failed to exec {program}: {error}"),
            SpawnError::Cgroup(e) => write!(f, "failed to join its cgroup: {e}"),
        }
    }
}

impl std::error::Error for SpawnError {}

impl From<ResolveError> for SpawnError {
    fn from(e: ResolveError) -> Self {
        SpawnError::Program(e)
    }
}

const LISTEN_PID: &[u8] = b"LISTEN_PID=";
const WATCHDOG_PID: &[u8] = b"WATCHDOG_PID=";
const STAGE_CHDIR: u8 = 1;
const STAGE_DUP: u8 = 2;
const STAGE_EXEC: u8 = 3;
const STAGE_CGROUP: u8 = 4;

/// Forks and execs one worker. Returns its pid once exec succeeded, or why it did not.
pub fn spawn(layout: &FdLayout, launch: &Launch) -> std::result::Result<Pid, SpawnError> {
    let argv = null_terminated(&launch.argv);
    let mut envp = null_terminated(&launch.env);
    // LISTEN_PID's value is the child's pid: the child writes it into this buffer (its own
    // copy) with plain stores, which is async-signal-safe.
    let mut listen_pid = [0u8; 32];
    listen_pid[..LISTEN_PID.len()].copy_from_slice(LISTEN_PID);
    let listen_pid: *mut u8 = listen_pid.as_mut_ptr();
    if launch.listen_pid {
        envp.insert(envp.len() - 1, listen_pid.cast_const().cast());
    }
    let mut watchdog_pid = [0u8; 32];
    watchdog_pid[..WATCHDOG_PID.len()].copy_from_slice(WATCHDOG_PID);
    let watchdog_pid: *mut u8 = watchdog_pid.as_mut_ptr();
    if launch.watchdog_pid {
        envp.insert(envp.len() - 1, watchdog_pid.cast_const().cast());
    }
    let (report_read, report_write) =
        report_pipe(layout.floor()).map_err(SpawnError::ReportPipe)?;
    let slots = layout.pairs();
    // SAFETY: start_server is single-threaded; the child runs only async-signal-safe calls on
    // data prepared above and leaves through execve or _exit.
    let (pid, join) = unsafe { fork_in(launch.cgroup) };
    if pid < 0 {
        return Err(SpawnError::Fork(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; in the child of fork.
        unsafe {
            if let Some(procs) = join
                && crate::server::cgroup::join(procs).is_err()
            {
                fail(report_write.as_raw_fd(), STAGE_CGROUP);
            }
            exec_child(
                launch,
                &slots,
                &argv,
                &envp,
                [listen_pid, watchdog_pid],
                report_write.as_raw_fd(),
            )
        }
    }
    drop(report_write);
    let mut report = [0u8; 5];
    if read_report(&report_read, &mut report) < report.len() {
        return Ok(pid);
    }
    // The child reported and is in _exit: reap it here, so it is never taken for anything else.
    reap_failed_child(pid);
    let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
    let error = std::io::Error::from_raw_os_error(errno);
    Err(match report[0] {
        STAGE_CHDIR => SpawnError::Chdir {
            dir: launch
                .dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
            error,
        },
        STAGE_DUP => SpawnError::PlaceSocket(error),
        STAGE_CGROUP => SpawnError::Cgroup(error),
        _ => SpawnError::Exec {
            program: launch.program.to_string_lossy().into_owned(),
            error,
        },
    })
}

/// fork(2), the child created in `cgroup` (directory, `cgroup.procs`) when there is one: by
/// `clone3(CLONE_INTO_CGROUP)`, else (an older kernel, a seccomp filter) by a plain fork whose
/// child joins it first. Returns the pid (-1 with errno on failure, 0 in the child) and, in the
/// child, the `cgroup.procs` it must join.
///
/// # Safety
///
/// As fork(2): the caller is single-threaded, and the child makes only async-signal-safe calls.
unsafe fn fork_in(cgroup: Option<(RawFd, RawFd)>) -> (libc::pid_t, Option<RawFd>) {
    if let Some((dir, procs)) = cgroup {
        // SAFETY: passed on from the caller.
        match unsafe { crate::server::cgroup::fork_into(dir) } {
            Ok(pid) => return (pid, None),
            // SAFETY: passed on from the caller.
            Err(_) => return (unsafe { libc::fork() }, Some(procs)),
        }
    }
    // SAFETY: passed on from the caller.
    (unsafe { libc::fork() }, None)
}

/// Reads the child's failure report until it is complete or the pipe closes (exec succeeded:
/// the write end was close-on-exec); returns how many bytes came.
fn read_report(report_read: &OwnedFd, report: &mut [u8]) -> usize {
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(report_read, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    got
}

/// Waits for a child that reported a failure and is exiting.
fn reap_failed_child(pid: Pid) {
    use nix::sys::wait::waitpid;
    let pid = nix::unistd::Pid::from_raw(pid);
    while let Err(nix::errno::Errno::EINTR) = waitpid(pid, None) {}
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec pipe with both ends above `floor`, so no `dup2` in the child can hit it.
fn report_pipe(floor: RawFd) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((dup_above(&read, floor)?, dup_above(&write, floor)?))
}

/// The child side of fork. Only async-signal-safe calls from here to exec.
unsafe fn exec_child(
    launch: &Launch,
    slots: &[(RawFd, RawFd)],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    [listen_pid, watchdog_pid]: [*mut u8; 2],
    report: RawFd,
) -> ! {
    // SAFETY: plain async-signal-safe system calls on pointers prepared before fork, valid in
    // the child's copy of the memory.
    unsafe {
        if launch.listen_pid {
            write_decimal(listen_pid.add(LISTEN_PID.len()), libc::getpid());
        }
        if launch.watchdog_pid {
            write_decimal(watchdog_pid.add(WATCHDOG_PID.len()), libc::getpid());
        }
        if let Some(dir) = &launch.dir
            && libc::chdir(dir.as_ptr()) != 0
        {
            fail(report, STAGE_CHDIR);
        }
        for &(source, target) in slots {
            if libc::dup2(source, target) < 0 {
                fail(report, STAGE_DUP);
            }
        }
        libc::setrlimit(libc::RLIMIT_NOFILE, &launch.nofile);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGXFSZ, launch.xfsz);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(launch.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(report, STAGE_EXEC)
    }
}

/// Writes `value` in decimal, NUL-terminated, at `out` (room for 11 bytes needed), without
/// allocating.
unsafe fn write_decimal(out: *mut u8, value: libc::pid_t) {
    let mut digits = [0u8; 10];
    let mut n = value.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: the caller gives room for 10 digits and the NUL.
        unsafe { *out.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: `len` <= 10, and the caller gives room for 10 digits and the NUL.
    unsafe { *out.add(len) = 0 };
}

unsafe fn fail(report: RawFd, stage: u8) -> ! {
    // SAFETY: errno location is thread-local and valid; write and _exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let e = errno.to_ne_bytes();
        let message = [stage, e[0], e[1], e[2], e[3]];
        libc::write(report, message.as_ptr().cast(), message.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_without_allocation() {
        let mut buffer = [0xffu8; 12];
        for (value, text) in [
            (0, "0"),
            (7, "7"),
            (4194304, "4194304"),
            (i32::MAX, "2147483647"),
        ] {
            // SAFETY: 12 bytes of room.
            unsafe { write_decimal(buffer.as_mut_ptr(), value) };
            let end = buffer.iter().position(|b| *b == 0).unwrap();
            assert_eq!(&buffer[..end], text.as_bytes());
        }
    }
}
