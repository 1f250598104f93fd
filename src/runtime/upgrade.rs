//! Upgrading start_server itself in place (SIGUSR2, `--upgrade`): the binary now at the path
//! start_server was started as is checked (`--upgrade-check`), then executed by this very
//! process, so the pid (systemd's MainPID, the pid file's), the sockets, the workers' parent and
//! their notification socket stay what they were, and every worker runs on.
//!
//! What the next image needs goes to it through a memfd, as JSON ([`State`], versioned by
//! [`FORMAT`]); the descriptors it names (sockets, pid file, notification socket, the log
//! command's pipe) are kept across the exec by clearing their close-on-exec flag for it only.
//! Signals stay blocked across `execve` (the mask survives it), so one sent meanwhile waits for
//! the new image's signalfd; a worker that exits meanwhile waits, a zombie, to be reaped by it.

use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::control::protocol::SocketInfo;
use crate::error::{Error, Result};
use crate::runtime::control_socket::{ClientId, ControlState};
use crate::runtime::files;
use crate::supervisor::state::State as SupervisorState;

/// The state format this image writes. A newer image reads every older format (missing fields
/// take their defaults, unknown ones are ignored); the number changes when an older image would
/// lose something by ignoring what is new, so that it refuses instead. 1: one worker per
/// generation; 2: `--workers` slots and their copies, the worker watchdog, the last reload;
/// 3: the control socket and its clients.
pub const FORMAT: u32 = 3;

/// The state formats this image reads.
pub const READS: &[u32] = &[1, 2, 3];

/// How long `--upgrade-check` may take before the upgrade is given up.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Marks the build tag in the binary: a packager (or a test) may write a tag of up to
/// [`TAG_LEN`] bytes after it, NUL-padded, in a copy of the binary; the version then reads
/// `0.1.0+TAG`, so two builds of one version can be told apart in an upgrade.
const TAG_MARKER: &[u8; 26] = b"SERVER_STARTER_BUILD_TAG=\0";
const TAG_LEN: usize = 38;

#[used]
static BUILD_TAG: [u8; 64] = {
    let mut tag = [0u8; 64];
    let mut i = 0;
    while i < TAG_MARKER.len() - 1 {
        tag[i] = TAG_MARKER[i];
        i += 1;
    }
    tag
};

/// This binary's version, with its build tag if one was written in.
pub fn version() -> String {
    // SAFETY: reading a static; volatile, so that a tag patched into the file is what is read.
    let tag = unsafe { std::ptr::read_volatile(&BUILD_TAG) };
    let start = TAG_MARKER.len() - 1;
    let value = &tag[start..start + TAG_LEN];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(TAG_LEN)];
    let version = env!("CARGO_PKG_VERSION");
    match std::str::from_utf8(value) {
        Ok(tag) if !tag.is_empty() => format!("{version}+{tag}"),
        _ => version.to_string(),
    }
}

/// `--upgrade-check`'s report: the version, then the formats this image reads.
pub fn check_report() -> String {
    let formats: Vec<String> = READS.iter().map(u32::to_string).collect();
    format!(
        "start_server {}\nupgrade-state-formats: {}\n",
        version(),
        formats.join(" ")
    )
}

/// The program start_server runs as: the binary at the path it was started as (never
/// /proc/self/exe, which is the old file, possibly deleted by a package upgrade), and its
/// command line.
#[derive(Debug, Clone)]
pub struct Image {
    /// Absolute, as found at start-up (symbolic links are kept: a package may move them).
    pub binary: PathBuf,
    /// The command line, without `--upgrade-state`.
    pub argv: Vec<OsString>,
    /// Where the outcome of an upgrade is written (`{PID_FILE}.upgrade`).
    pub report: Option<PathBuf>,
}

impl Image {
    /// This process's binary and command line, resolved now (before anything changes the
    /// working directory).
    pub fn current(pid_file: Option<&Path>) -> Image {
        let mut argv: Vec<OsString> = std::env::args_os().collect();
        if argv
            .get(1)
            .is_some_and(|a| a.as_bytes().starts_with(b"--upgrade-state="))
        {
            argv.remove(1);
        }
        let zero = argv.first().cloned().unwrap_or_default();
        Image {
            binary: resolve_binary(&zero),
            argv,
            report: pid_file.map(report_path),
        }
    }
}

/// `argv[0]` as a path: absolute as it is, relative to the working directory if it has a slash,
/// else looked up in `PATH` as the shell did.
fn resolve_binary(zero: &std::ffi::OsStr) -> PathBuf {
    let path = Path::new(zero);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    if zero.as_bytes().contains(&b'/') {
        return std::env::current_dir()
            .map(|dir| dir.join(path).components().collect())
            .unwrap_or_else(|_| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| path.to_path_buf())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What the event loop keeps for an upgrade besides its own resources: the program, and what
/// `serve` holds (the pid file's lock, the socket files to remove at exit).
#[derive(Debug)]
pub struct Handover {
    pub image: Image,
    pub pid_file_fd: Option<RawFd>,
    pub unix_paths: Vec<PathBuf>,
}

/// Everything the next image needs besides its command line (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// [`FORMAT`] of the image that wrote it.
    pub format: u32,
    /// The version of the image that wrote it.
    pub written_by: String,
    /// The command line (`argv[0]` included, `--upgrade-state` not), checked against the next
    /// image's.
    pub argv: Vec<String>,
    /// The binary's path as resolved at start-up.
    pub binary: String,
    pub supervisor: SupervisorState,
    pub sockets: SocketsState,
    pub pid_file_fd: Option<RawFd>,
    /// Whether the status file and its failure file were written (and so go at exit).
    pub status_written: (bool, bool),
    pub worker_notify: NotifySocketState,
    /// The open-file limit workers get (start_server raised its own).
    pub nofile: (u64, u64),
    pub xfsz_was_ignored: bool,
    pub logger: Option<LoggerState>,
    /// When start_server started (relative to the hand-over, microseconds, negative), for
    /// `status`'s uptime.
    pub started: i64,
    /// What `status` says of the sockets.
    pub socket_info: Vec<SocketInfo>,
    /// The control socket and its clients.
    pub control: Option<ControlState>,
    /// The event loop's own bookkeeping.
    pub event_loop: LoopState,
}

/// What the event loop keeps between events, besides the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopState {
    /// Control clients waiting for a reload, each with the newest generation spawned when it
    /// asked.
    pub reload_waiters: Vec<(ClientId, u64)>,
    /// The newest generation spawned so far.
    pub last_spawned: u64,
    /// Control clients waiting for this upgrade's outcome.
    pub upgrade_waiters: Vec<ClientId>,
}

/// The sockets: where each is in start_server and in the worker, and how workers are told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SocketsState {
    /// `(fd in start_server, fd in the worker)`, in command-line order.
    pub slots: Vec<(RawFd, RawFd)>,
    pub floor: RawFd,
    pub port_env: String,
    pub listen_env: Option<(String, String)>,
    /// Socket files to remove at exit.
    pub unix_paths: Vec<String>,
}

/// The workers' notification socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifySocketState {
    pub fd: RawFd,
    pub name: String,
}

/// The `--log-file` command and its pipe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggerState {
    pub input: RawFd,
    pub output: (RawFd, RawFd),
    pub pid: Option<i32>,
    /// Since when the command runs, relative to the hand-over (microseconds, negative).
    pub started: i64,
    pub quick_exits: u32,
    pub restart_at: Option<i64>,
}

impl State {
    /// Every descriptor the state names, which must stay open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.sockets.slots.iter().map(|&(fd, _)| fd).collect();
        fds.extend(self.pid_file_fd);
        fds.push(self.worker_notify.fd);
        if let Some(logger) = &self.logger {
            fds.extend([logger.input, logger.output.0, logger.output.1]);
        }
        if let Some(control) = &self.control {
            fds.extend(control.fds());
        }
        fds
    }

    /// Reads a state written by this image or an older one.
    pub fn parse(text: &str) -> Result<State> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let format = serde_json::from_str::<Format>(text)
            .map_err(|e| Error::runtime(format!("the upgrade state has no format: {e}")))?
            .format;
        if !READS.contains(&format) {
            return Err(Error::runtime(format!(
                "the upgrade state is in format {format}, this start_server reads {READS:?}"
            )));
        }
        serde_json::from_str(text)
            .map_err(|e| Error::runtime(format!("the upgrade state cannot be read: {e}")))
    }
}

/// Why an upgrade did not happen, for the log, systemd and `--upgrade`.
pub type Refusal = String;

/// Runs `binary --upgrade-check ARGS...` (bounded by [`CHECK_TIMEOUT`]): the binary must exit 0
/// and read this image's state format.
pub fn check(image: &Image) -> std::result::Result<String, Refusal> {
    let shown = image.binary.display();
    let mut child = Command::new(&image.binary)
        .arg("--upgrade-check")
        .args(image.argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} --upgrade-check did not answer within {} secs",
                    CHECK_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {shown} --upgrade-check: {e}")),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if !status.success() {
        let said = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!(
            "{shown} --upgrade-check failed ({status}){}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ));
    }
    let reads: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("upgrade-state-formats:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if !reads.contains(&FORMAT) {
        return Err(format!(
            "{shown} does not read upgrade state format {FORMAT} (it reads: {})",
            if reads.is_empty() {
                "none".to_string()
            } else {
                format!("{reads:?}")
            }
        ));
    }
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("start_server "))
        .unwrap_or("(unknown version)")
        .trim()
        .to_string();
    Ok(version)
}

/// Writes `state` to a fresh memfd (its fd is left open across exec), rewound for the reader.
pub fn write_state(state: &State) -> std::result::Result<OwnedFd, Refusal> {
    let text = serde_json::to_vec(state).map_err(|e| format!("cannot encode the state: {e}"))?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is a new fd we own.
    let fd = unsafe { libc::memfd_create(c"start_server-upgrade-state".as_ptr(), 0) };
    if fd < 0 {
        return Err(format!(
            "cannot create a memfd for the state: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new descriptor nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&text)
        .and_then(|()| file.rewind())
        .map_err(|e| format!("cannot write the state: {e}"))?;
    Ok(file.into())
}

/// Reads the state an earlier image left at `fd`, and closes it; returns it with its size in
/// bytes.
///
/// # Safety
///
/// `fd` must be the state's descriptor, owned by nothing else.
pub unsafe fn read_state(fd: RawFd) -> Result<(State, usize)> {
    // SAFETY: the caller promises the fd is ours alone.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| Error::runtime(format!("cannot read the upgrade state at fd {fd}: {e}")))?;
    Ok((State::parse(&text)?, text.len()))
}

/// Sets or clears close-on-exec on each of `fds`.
pub fn set_cloexec(fds: &[RawFd], on: bool) -> std::result::Result<(), Refusal> {
    for &fd in fds {
        // SAFETY: F_GETFD and F_SETFD only read and set the fd's flags.
        let done = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            flags >= 0
                && libc::fcntl(
                    fd,
                    libc::F_SETFD,
                    if on {
                        flags | libc::FD_CLOEXEC
                    } else {
                        flags & !libc::FD_CLOEXEC
                    },
                ) == 0
        };
        if !done {
            return Err(format!(
                "cannot keep fd {fd} open across the exec: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Replaces this process's program with `image`'s binary, passing the state at `state_fd`.
/// Returns only if `execve` failed, with why.
pub fn exec(image: &Image, state_fd: RawFd) -> Refusal {
    let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes().to_vec());
    let binary = match c(image.binary.as_os_str()) {
        Ok(binary) => binary,
        Err(_) => return "the binary's path contains a NUL byte".to_string(),
    };
    let mut argv = Vec::with_capacity(image.argv.len() + 1);
    let mut args = image.argv.iter();
    argv.extend(args.next().map(|a| c(a)));
    argv.push(CString::new(format!("--upgrade-state={state_fd}")));
    argv.extend(args.map(|a| c(a)));
    let Ok(argv) = argv.into_iter().collect::<std::result::Result<Vec<_>, _>>() else {
        return "the command line contains a NUL byte".to_string();
    };
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            CString::new(entry).ok()
        })
        .collect();
    match nix::unistd::execve(&binary, &argv, &env) {
        Ok(never) => match never {},
        Err(e) => format!("failed to execute {}: {}", image.binary.display(), e.desc()),
    }
}

/// `{PID_FILE}.upgrade`: where the outcome of the last upgrade is written.
pub fn report_path(pid_file: &Path) -> PathBuf {
    let mut path = pid_file.as_os_str().to_os_string();
    path.push(".upgrade");
    PathBuf::from(path)
}

/// Writes the outcome beside the pid file, with a timestamp so that each outcome differs from
/// the one before: `OK <µs> <version>` or `FAILED <µs> <why>`.
pub fn report(path: Option<&Path>, outcome: &std::result::Result<String, Refusal>) {
    let Some(path) = path else {
        return;
    };
    let stamp = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1000)
        .unwrap_or_default();
    let text = match outcome {
        Ok(version) => format!("OK {stamp} {version}\n"),
        Err(why) => format!("FAILED {stamp} {}\n", why.replace('\n', " ")),
    };
    if let Err(e) = files::replace(path, text.as_bytes()) {
        tracing::error!("{e}");
    }
}

/// An outcome as [`report`] wrote it: `Ok(version)` or `Err(why)`; `None` if there is none.
pub fn read_report(text: &str) -> Option<std::result::Result<String, String>> {
    let line = text.lines().next()?;
    let mut parts = line.splitn(3, ' ');
    let (word, _stamp, rest) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    match word {
        "OK" => Some(Ok(rest.to_string())),
        "FAILED" => Some(Err(rest.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_has_no_tag_unless_one_is_written_in() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        assert!(check_report().ends_with("\nupgrade-state-formats: 1 2 3\n"));
    }

    #[test]
    fn reports_read_back() {
        assert_eq!(read_report("OK 12 0.2.0\n"), Some(Ok("0.2.0".into())));
        assert_eq!(
            read_report("FAILED 13 cannot run /x: gone\n"),
            Some(Err("cannot run /x: gone".into()))
        );
        assert_eq!(read_report(""), None);
    }

    /// States as images writing formats 1 (before `--workers`), 2 (before the control socket)
    /// and 3 wrote them, kept as they were: every later image must read them.
    const FORMAT_1: &str = include_str!("../../tests/fixtures/upgrade-state-v1.json");
    const FORMAT_2: &str = include_str!("../../tests/fixtures/upgrade-state-v2.json");
    const FORMAT_3: &str = include_str!("../../tests/fixtures/upgrade-state-v3.json");

    fn policy(workers: usize) -> crate::supervisor::Policy {
        crate::supervisor::Policy {
            interval: Duration::from_secs(1),
            signal_on_hup: nix::sys::signal::Signal::SIGTERM,
            signal_on_term: nix::sys::signal::Signal::SIGTERM,
            ready_timeout: None,
            kill_old_timeout: None,
            backoff_after: crate::supervisor::DEFAULT_BACKOFF_AFTER,
            backoff_max: Duration::from_secs(60),
            shutdown_delay: Duration::ZERO,
            worker_watchdog: Some(Duration::from_secs(10)),
            workers,
            max_extra: None,
        }
    }

    #[test]
    fn the_state_written_in_format_1_is_read() {
        let state = State::parse(FORMAT_1).unwrap();
        assert_eq!((state.format, state.written_by.as_str()), (1, "0.1.0"));
        assert_eq!(state.sockets.slots, [(4, 3)]);
        assert_eq!(state.fds(), [4, 3, 6]);
        let now = Instant::now();
        let supervisor = crate::supervisor::Supervisor::import(state.supervisor, policy(1), now);
        assert_eq!(
            supervisor.slots(),
            1,
            "from the command line: the state has none"
        );
        assert_eq!(supervisor.worker_pids(), [1002, 1003, 1004]);
        let live: Vec<(u64, i32)> = supervisor
            .live()
            .iter()
            .map(|w| (w.generation, w.pid))
            .collect();
        assert_eq!(live, [(2, 1002), (3, 1003)]);
        // The trial, spawned half a second before the hand-over, is judged half a second after.
        assert_eq!(
            supervisor.next_deadline(),
            Some(now + Duration::from_millis(500))
        );
    }

    #[test]
    fn the_state_written_in_format_2_is_read() {
        let state = State::parse(FORMAT_2).unwrap();
        assert_eq!(state.format, 2);
        let now = Instant::now();
        let supervisor = crate::supervisor::Supervisor::import(state.supervisor, policy(2), now);
        assert_eq!(supervisor.slots(), 2);
        assert_eq!(supervisor.worker_pids(), [1002, 1003, 1004, 2003, 2004]);
        let snapshot = supervisor.snapshot(now);
        assert!(
            snapshot
                .workers
                .iter()
                .any(|w| (w.pid, w.slot, w.restarts, w.watchdog_kills) == (2003, 1, 1, 1)),
            "{snapshot:?}"
        );
        assert_eq!(
            snapshot.last_reload.map(|r| r.trigger),
            Some(crate::supervisor::ReloadTrigger::FileChange(
                "/srv/app".into()
            ))
        );
    }

    #[test]
    fn the_state_written_in_format_3_is_read() {
        let state = State::parse(FORMAT_3).unwrap();
        assert_eq!(state.format, 3);
        let control = state.control.clone().expect("the control socket");
        assert_eq!((control.listener, control.clients.len()), (7, 1));
        assert_eq!(state.event_loop.upgrade_waiters, [3]);
        assert_eq!(state.fds(), [4, 3, 6, 7, 8]);
        assert_eq!(state.socket_info[0].origin, "bound");
        let older = State::parse(FORMAT_2).unwrap();
        assert_eq!((older.control, older.started), (None, 0), "defaults");
    }

    #[test]
    fn a_state_names_its_format_and_older_readers_refuse_newer_ones() {
        let state = State {
            format: FORMAT,
            ..State::default()
        };
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(State::parse(&text).unwrap(), state);
        let newer = text.replacen(&format!("\"format\":{FORMAT}"), "\"format\":999", 1);
        assert!(State::parse(&newer).is_err());
        let extra = text.replacen('{', "{\"added_later\":[1,2],", 1);
        assert_eq!(State::parse(&extra).unwrap(), state);
    }
}
