//! One mechanism for everything that survives an upgrade's exec: each such part implements
//! [`Handover`] (what it writes into the state, which of its fds stay open, how it comes back
//! in the next image), and [`collect`] gathers the parts' pieces into the [`State`].

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::image::Image;
use super::refusal::Refusal;
use super::state::{FORMAT, State};
use super::version::version;
use crate::error::{Error, Result};
use crate::server::cgroup::tree::{Cgroups, CgroupsState};
use crate::server::control::Control;
use crate::server::control::socket::ControlSocket;
use crate::server::control::status::{FactsState, Fixed};
use crate::server::files::pid_file::PidFile;
use crate::server::files::status_file::StatusFile;
use crate::server::log::output::{Logger, LoggerState};
use crate::server::metrics::counters::Counters;
use crate::server::metrics::listen::{MetricsListen, MetricsListenState};
use crate::server::notify::workers::{NotifySocketState, WorkerNotify};
use crate::server::process::spawner::{Program, Spawner, SpawnerState};
use crate::supervisor::{Policy, Supervisor, Worker};

/// A part of the running start_server that the next program image takes over.
pub trait Handover: Sized {
    /// What it writes into the state.
    type State;
    /// What it needs besides its state to come back (from the command line, parsed again).
    type Given;

    /// Its state at `now`, the moment of the hand-over.
    fn hand_over(&self, now: Instant) -> std::result::Result<Self::State, Refusal>;

    /// The descriptors its state names, which must stay open across the exec.
    fn fds(_state: &Self::State) -> Vec<RawFd> {
        Vec::new()
    }

    /// The part as the image before this one left it, at `now`.
    ///
    /// # Safety
    ///
    /// The descriptors the state names must be open, of the kind it says, and owned by
    /// nothing else.
    unsafe fn take_over(state: Self::State, given: Self::Given, now: Instant) -> Result<Self>;
}

impl Handover for Supervisor {
    type State = serde_json::Value;
    type Given = Policy;

    fn hand_over(&self, now: Instant) -> std::result::Result<Self::State, Refusal> {
        Supervisor::export(self, now)
            .map_err(|e| Refusal::State(format!("cannot encode the supervisor: {e}")))
    }

    unsafe fn take_over(state: Self::State, policy: Policy, now: Instant) -> Result<Self> {
        Supervisor::import(state, policy, now).map_err(|e| {
            Error::runtime(format!(
                "the upgrade state's supervisor cannot be read: {e}"
            ))
        })
    }
}

impl Handover for Spawner {
    type State = SpawnerState;
    type Given = (Program, String);

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Spawner::export(self).map_err(Refusal::State)
    }

    fn fds(state: &Self::State) -> Vec<RawFd> {
        Spawner::fds(state)
    }

    unsafe fn take_over(
        state: Self::State,
        (program, notify): Self::Given,
        _: Instant,
    ) -> Result<Self> {
        // SAFETY: passed on from the caller.
        unsafe { Spawner::adopt(state, program, notify) }
    }
}

impl Handover for PidFile {
    type State = RawFd;
    type Given = PathBuf;

    fn hand_over(&self, _: Instant) -> std::result::Result<RawFd, Refusal> {
        Ok(self.raw_fd())
    }

    fn fds(fd: &RawFd) -> Vec<RawFd> {
        vec![*fd]
    }

    unsafe fn take_over(fd: RawFd, path: PathBuf, _: Instant) -> Result<Self> {
        // SAFETY: passed on from the caller.
        unsafe { PidFile::adopt(fd, &path) }
    }
}

impl Handover for StatusFile {
    type State = (bool, bool);
    type Given = PathBuf;

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(self.written())
    }

    unsafe fn take_over(written: Self::State, path: PathBuf, _: Instant) -> Result<Self> {
        StatusFile::adopt(&path, written)
    }
}

impl Handover for WorkerNotify {
    type State = NotifySocketState;
    type Given = ();

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(WorkerNotify::export(self))
    }

    fn fds(state: &Self::State) -> Vec<RawFd> {
        vec![state.fd]
    }

    unsafe fn take_over(state: Self::State, (): (), _: Instant) -> Result<Self> {
        // SAFETY: passed on from the caller.
        Ok(unsafe { WorkerNotify::adopt(state) })
    }
}

impl Handover for Logger {
    type State = LoggerState;
    type Given = String;

    fn hand_over(&self, now: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(Logger::export(self, now))
    }

    fn fds(state: &Self::State) -> Vec<RawFd> {
        Logger::fds(state).to_vec()
    }

    unsafe fn take_over(state: Self::State, command: String, now: Instant) -> Result<Self> {
        // SAFETY: passed on from the caller.
        Ok(unsafe { Logger::adopt(command, &state, now) })
    }
}

impl Handover for Fixed {
    type State = FactsState;
    type Given = ();

    fn hand_over(&self, now: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(Fixed::export(self, now))
    }

    unsafe fn take_over(state: Self::State, (): (), now: Instant) -> Result<Self> {
        Ok(Fixed::adopt(state, now))
    }
}

impl Handover for Cgroups {
    type State = CgroupsState;
    type Given = (Option<Duration>, Vec<Worker>);

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(self.export())
    }

    unsafe fn take_over(
        state: Self::State,
        (kill_old_timeout, workers): Self::Given,
        _: Instant,
    ) -> Result<Self> {
        Cgroups::adopt(state, kill_old_timeout, &workers).map_err(|e| {
            Error::runtime(format!(
                "the generations' cgroups cannot be taken over: {e}"
            ))
        })
    }
}

impl Handover for MetricsListen {
    type State = MetricsListenState;
    type Given = ();

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok(self.export())
    }

    fn fds(state: &Self::State) -> Vec<RawFd> {
        vec![state.fd]
    }

    unsafe fn take_over(state: Self::State, (): (), _: Instant) -> Result<Self> {
        // SAFETY: passed on from the caller.
        unsafe { MetricsListen::adopt(state) }
    }
}

impl Handover for Control {
    type State = (
        crate::server::control::socket::ControlState,
        crate::server::control::Waiting,
    );
    type Given = ();

    fn hand_over(&self, _: Instant) -> std::result::Result<Self::State, Refusal> {
        Ok((self.socket().export(), self.waiting().clone()))
    }

    fn fds((socket, _): &Self::State) -> Vec<RawFd> {
        socket.fds()
    }

    unsafe fn take_over((socket, waiting): Self::State, (): (), _: Instant) -> Result<Self> {
        // SAFETY: passed on from the caller.
        Ok(Control::new(
            unsafe { ControlSocket::adopt(socket) }?,
            waiting,
        ))
    }
}

/// Everything that survives the exec, as the event loop holds it.
pub struct Parts<'a> {
    pub supervisor: &'a Supervisor,
    pub spawner: &'a Spawner,
    pub pid_file: Option<&'a PidFile>,
    pub status_file: Option<&'a StatusFile>,
    pub workers_notify: &'a WorkerNotify,
    pub logger: Option<&'a Logger>,
    pub facts: &'a Fixed,
    pub control: Option<&'a Control>,
    pub cgroups: Option<&'a Cgroups>,
    pub metrics: Option<&'a MetricsListen>,
    /// The server's counts, this image's added.
    pub counters: Counters,
}

/// The state of every part at `now`, with the program it runs as.
pub fn collect(
    image: &Image,
    parts: &Parts<'_>,
    now: Instant,
) -> std::result::Result<State, Refusal> {
    let text = |s: &std::ffi::OsStr, what: &str| {
        s.to_str()
            .map(str::to_string)
            .ok_or_else(|| Refusal::State(format!("{what} is not UTF-8: {s:?}")))
    };
    let argv = image
        .argv
        .iter()
        .map(|a| text(a, "the command line"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let (control, waiting) = match parts.control {
        Some(control) => {
            let (socket, waiting) = Handover::hand_over(control, now)?;
            (Some(socket), waiting)
        }
        None => (None, Default::default()),
    };
    Ok(State {
        format: FORMAT,
        written_by: version(),
        argv,
        binary: text(image.binary.as_os_str(), "the binary's path")?,
        supervisor: Handover::hand_over(parts.supervisor, now)?,
        spawner: Handover::hand_over(parts.spawner, now)?,
        pid_file_fd: parts.pid_file.map(|p| p.hand_over(now)).transpose()?,
        status_written: match parts.status_file {
            Some(status) => Handover::hand_over(status, now)?,
            None => (false, false),
        },
        worker_notify: Handover::hand_over(parts.workers_notify, now)?,
        xfsz_was_ignored: crate::server::process::signals::xfsz_was_ignored(),
        logger: parts
            .logger
            .map(|l| Handover::hand_over(l, now))
            .transpose()?,
        facts: Handover::hand_over(parts.facts, now)?,
        control,
        waiting,
        cgroups: parts.cgroups.map(|c| c.hand_over(now)).transpose()?,
        metrics_listen: parts.metrics.map(|m| m.hand_over(now)).transpose()?,
        counters: parts.counters,
    })
}

/// What a descriptor named in the state must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A socket workers get: TCP, UDP, or a unix stream socket.
    Listener,
    /// The workers' notification socket.
    UnixDatagram,
    /// The control socket and its clients.
    UnixStream,
    /// The pid file.
    File,
    /// The log command's pipe and outputs: whatever they are, open.
    Open,
}

impl Kind {
    /// Whether `fd` is open and of this kind; what it is otherwise.
    fn check(self, fd: RawFd) -> std::result::Result<(), String> {
        use server_starter_worker::SocketKind;
        if fd < 0 {
            return Err(format!("fd {fd} is not a descriptor"));
        }
        // SAFETY: F_GETFD only asks whether the fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("fd {fd} is not open"));
        }
        let socket = server_starter_worker::socket_kind(fd);
        let fits = match self {
            Kind::Listener => matches!(
                socket,
                Ok(SocketKind::Tcp | SocketKind::Udp | SocketKind::UnixStream)
            ),
            Kind::UnixDatagram => matches!(socket, Ok(SocketKind::UnixDatagram)),
            Kind::UnixStream => matches!(socket, Ok(SocketKind::UnixStream)),
            Kind::File => {
                // SAFETY: the fd is open (checked above) and only looked at.
                let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                nix::sys::stat::fstat(file)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
            }
            Kind::Open => true,
        };
        if fits {
            Ok(())
        } else {
            Err(format!("fd {fd} is not {self:?}"))
        }
    }
}

impl State {
    /// Fails unless this is a whole state whose every descriptor is open and of the kind the
    /// part that takes it expects: nothing is taken over before.
    pub fn validate(&self) -> Result<()> {
        let incomplete = |what: &str| {
            Error::runtime(format!("the upgrade state is not whole: it has no {what}"))
        };
        if self.written_by.is_empty() {
            return Err(incomplete("writer"));
        }
        if self.argv.is_empty() {
            return Err(incomplete("command line"));
        }
        if !self.supervisor.is_object() {
            return Err(incomplete("supervisor"));
        }
        if self.worker_notify.name.is_empty() {
            return Err(incomplete("notification socket"));
        }
        let mut named: Vec<(RawFd, Kind)> = Spawner::fds(&self.spawner)
            .into_iter()
            .map(|fd| (fd, Kind::Listener))
            .collect();
        named.extend(self.pid_file_fd.map(|fd| (fd, Kind::File)));
        named.push((self.worker_notify.fd, Kind::UnixDatagram));
        if let Some(logger) = &self.logger {
            named.extend(Logger::fds(logger).map(|fd| (fd, Kind::Open)));
        }
        if let Some(control) = &self.control {
            named.extend(control.fds().into_iter().map(|fd| (fd, Kind::UnixStream)));
        }
        if let Some(metrics) = &self.metrics_listen {
            named.push((metrics.fd, Kind::Listener));
        }
        for (fd, kind) in named {
            kind.check(fd)
                .map_err(|why| Error::runtime(format!("the upgrade state is wrong: {why}")))?;
        }
        Ok(())
    }

    /// Every descriptor the state names, which must stay open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = Spawner::fds(&self.spawner);
        fds.extend(self.pid_file_fd.iter().flat_map(PidFile::fds));
        fds.extend(WorkerNotify::fds(&self.worker_notify));
        fds.extend(self.logger.iter().flat_map(Logger::fds));
        if let Some(control) = &self.control {
            fds.extend(control.fds());
        }
        fds.extend(self.metrics_listen.iter().flat_map(MetricsListen::fds));
        fds
    }
}
