//! The state an upgrade in place hands to the next program image, in a memfd as JSON,
//! versioned by [`FORMAT`]: each part that survives the exec contributes its own piece (see
//! `handover`); the descriptors they name are kept open across the exec by clearing their
//! close-on-exec flag for it only.

use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use super::refusal::Refusal;
use crate::error::{Error, Result};
use crate::server::cgroup::tree::CgroupsState;
use crate::server::control::Waiting;
use crate::server::control::socket::ControlState;
use crate::server::control::status::FactsState;
use crate::server::log::output::LoggerState;
use crate::server::metrics::counters::Counters;
use crate::server::metrics::listen::MetricsListenState;
use crate::server::notify::workers::NotifySocketState;
use crate::server::process::spawner::SpawnerState;

/// The state format this image writes. A newer image reads every older format (missing fields
/// take their defaults, unknown ones are ignored); the number changes when an older image would
/// lose something by ignoring what is new, so that it refuses instead. 1: one worker per
/// generation; 2: `--workers` slots and their copies, the worker watchdog, the last reload;
/// 3: the control socket and its clients; 4: the generations' cgroups, the metrics endpoint and
/// the counts.
pub const FORMAT: u32 = 4;

/// The state formats this image reads.
pub const READS: &[u32] = &[1, 2, 3, 4];

/// Everything the next image needs besides its command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The supervisor, as it serializes itself.
    pub supervisor: serde_json::Value,
    /// The sockets and the workers' open-file limit (`sockets`, `nofile`).
    #[serde(flatten)]
    pub spawner: SpawnerState,
    /// The locked pid file.
    pub pid_file_fd: Option<RawFd>,
    /// Whether the status file and its failure file were written (and so go at exit).
    pub status_written: (bool, bool),
    /// The workers' notification socket.
    pub worker_notify: NotifySocketState,
    /// Whether start_server's caller had SIGXFSZ ignored (workers get it so).
    pub xfsz_was_ignored: bool,
    /// The `--log-file` command and its pipe.
    pub logger: Option<LoggerState>,
    /// What `status` reports that does not change (`started`, `socket_info`).
    #[serde(flatten)]
    pub facts: FactsState,
    /// The control socket and its clients.
    pub control: Option<ControlState>,
    /// The control clients waiting for a reload or this upgrade.
    #[serde(rename = "event_loop")]
    pub waiting: Waiting,
    /// The generations' cgroup subtree.
    pub cgroups: Option<CgroupsState>,
    /// The metrics endpoint (`--metrics-listen`).
    pub metrics_listen: Option<MetricsListenState>,
    /// The server's counts (the supervisor hands its own over with itself).
    pub counters: Counters,
}

impl State {
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

/// Writes `state` to a fresh memfd, rewound for the reader and sealed: neither the next image
/// nor anyone else can change it, so an image rolled back to reads what it wrote.
pub fn write(state: &State) -> std::result::Result<OwnedFd, Refusal> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let failed = |what: &str, e: &dyn std::fmt::Display| Refusal::State(format!("{what}: {e}"));
    let text = serde_json::to_vec(state).map_err(|e| failed("cannot encode the state", &e))?;
    let fd = memfd_create(
        c"start_server-upgrade-state",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| failed("cannot create a memfd for the state", &e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&text)
        .and_then(|()| file.rewind())
        .map_err(|e| failed("cannot write the state", &e))?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| failed("cannot seal the state", &e))?;
    Ok(file.into())
}

/// Reads the state an earlier image left at `fd` (from its start, leaving the fd open: a way
/// back hands it on); returns it with its size in bytes.
pub fn read(fd: BorrowedFd<'_>) -> Result<(State, usize)> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::runtime(format!(
            "cannot read the upgrade state at fd {}: {e}",
            fd.as_raw_fd()
        ))
    };
    let mut text = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let at = i64::try_from(text.len()).map_err(|e| failed(&e))?;
        match nix::sys::uio::pread(fd, &mut buffer, at) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(failed(&e)),
        }
    }
    let text = String::from_utf8(text).map_err(|e| failed(&e))?;
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
            return Err(Refusal::KeepOpen {
                fd,
                error: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// States as images writing formats 1 (before `--workers`), 2 (before the control socket),
    /// 3 (before cgroups and metrics) and 4 wrote them, kept as they were: every later image must
    /// read them.
    const FORMAT_1: &str = include_str!("../../../tests/fixtures/upgrade-state-v1.json");
    const FORMAT_2: &str = include_str!("../../../tests/fixtures/upgrade-state-v2.json");
    const FORMAT_3: &str = include_str!("../../../tests/fixtures/upgrade-state-v3.json");
    const FORMAT_4: &str = include_str!("../../../tests/fixtures/upgrade-state-v4.json");

    fn policy(workers: usize) -> crate::supervisor::Policy {
        crate::supervisor::Policy {
            worker_watchdog: Some(Duration::from_secs(10)),
            workers,
            ..crate::supervisor::Policy::default()
        }
    }

    #[test]
    fn the_state_written_in_format_1_is_read() {
        let state = State::parse(FORMAT_1).unwrap();
        assert_eq!((state.format, state.written_by.as_str()), (1, "0.1.0"));
        assert_eq!(state.spawner.sockets.slots, [(4, 3)]);
        assert_eq!(state.fds(), [4, 3, 6]);
        let now = Instant::now();
        let supervisor =
            crate::supervisor::Supervisor::import(state.supervisor, policy(1), now).unwrap();
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
        let supervisor =
            crate::supervisor::Supervisor::import(state.supervisor, policy(2), now).unwrap();
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
        assert_eq!(state.waiting.upgrades, [3]);
        assert_eq!(state.fds(), [4, 3, 6, 7, 8]);
        assert_eq!(state.facts.socket_info[0].origin, "bound");
        let older = State::parse(FORMAT_2).unwrap();
        assert_eq!((older.control, older.facts.started), (None, 0), "defaults");
    }

    #[test]
    fn a_state_that_is_not_whole_or_names_a_wrong_fd_is_refused_before_anything_is_taken() {
        let bare = State::parse(r#"{"format":3}"#).unwrap();
        let e = bare.validate().unwrap_err().to_string();
        assert!(e.contains("not whole"), "{e}");
        // The fixture names fds this test process does not have as sockets.
        let mut state = State::parse(FORMAT_3).unwrap();
        let e = state.validate().unwrap_err().to_string();
        assert!(e.contains("the upgrade state is wrong: fd"), "{e}");
        state.spawner.sockets.slots = vec![(-1, 3)];
        let e = state.validate().unwrap_err().to_string();
        assert!(e.contains("fd -1 is not a descriptor"), "{e}");
        // fd 0 (this process's stdin) is no listening socket.
        state.spawner.sockets.slots = vec![(0, 3)];
        let e = state.validate().unwrap_err().to_string();
        assert!(e.contains("fd 0 is not"), "{e}");
    }

    #[test]
    fn the_state_written_in_format_4_is_read() {
        let state = State::parse(FORMAT_4).unwrap();
        assert_eq!(state.format, 4);
        assert_eq!(
            state.cgroups.as_ref().map(|c| c.path.as_str()),
            Some("/system.slice/app.service")
        );
        assert_eq!(
            state.fds(),
            [4, 3, 6, 7, 8, 9],
            "the metrics listener kept open"
        );
        assert_eq!(state.counters.log_lines_dropped(1), 5);
        assert_eq!(state.counters.upgrades_ok, 1);
        let now = Instant::now();
        let supervisor =
            crate::supervisor::Supervisor::import(state.supervisor, policy(2), now).unwrap();
        assert!(supervisor.worker_pids().contains(&2005), "the replacement");
        let tally = supervisor.tally();
        assert_eq!((tally.reloads_ok, tally.exits.retired), (2, 3));
        assert_eq!(tally.reload_seconds.count(), 2);
        assert_eq!(supervisor.snapshot(now).memory_recycles, [0, 1]);
        let older = State::parse(FORMAT_3).unwrap();
        assert_eq!(
            (older.cgroups, older.metrics_listen),
            (None, None),
            "defaults"
        );
        assert_eq!(older.counters, Default::default());
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
