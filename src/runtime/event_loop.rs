//! The OS side of the supervisor: one blocking `ppoll` on the signalfd, the workers'
//! notification socket, the control socket and its clients and the `--reload-on-change`
//! inotify fd, with the timeout of the next deadline (none while idle), then the events
//! it reports fed to the state machine and the actions it answers carried out. Every signal path
//! is in [`run`].

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tracing::{error, info, warn};

use crate::config::worker_env::{self, Env};
use crate::control::protocol::{Reply, Request};
use crate::error::{Context, Result};
use crate::runtime::control_socket::{ClientId, ControlSocket};
use crate::runtime::file_watch::FileWatch;
use crate::runtime::notify::Notifier;
use crate::runtime::output::Logger;
use crate::runtime::signals::{Received, Signals};
use crate::runtime::spawn::{self, FdLayout, Launch};
use crate::runtime::status_file::StatusFile;
use crate::runtime::status_report;
use crate::runtime::strays::{self, Adopted};
use crate::runtime::upgrade::{self, Handover};
use crate::runtime::worker_notify::WorkerNotify;
use crate::supervisor::{
    Action, ExitStatus, Notice, Pid, Policy, ReloadTrigger, Supervisor, Worker,
};

/// What the loop needs to make and watch workers.
pub struct Runtime {
    /// The sockets and where they go.
    pub layout: FdLayout,
    /// `SERVER_STARTER_PORT` (empty when there are no sockets).
    pub port_env: String,
    /// `LISTEN_FDS` and `LISTEN_FDNAMES` (plus `LISTEN_PID`, set in the child), when they apply.
    pub listen_env: Option<(String, String)>,
    /// The server program and its arguments.
    pub command: Vec<OsString>,
    /// The workers' directory.
    pub dir: Option<PathBuf>,
    /// Re-read before every spawn.
    pub envdir: Option<PathBuf>,
    /// The environment under the envdir.
    pub base_env: Env,
    /// `--status-file`.
    pub status: Option<StatusFile>,
    /// Open-file limit for workers.
    pub nofile: libc::rlimit,
    /// The `--log-file` command, which is our child too but not a worker.
    pub logger: Option<Logger>,
    /// systemd's notification socket.
    pub notifier: Notifier,
    /// The workers' notification socket.
    pub worker_notify: WorkerNotify,
    /// Processes left behind by workers (adopted: start_server is a subreaper).
    pub strays: Adopted,
    /// What an upgrade in place needs besides the above.
    pub handover: Handover,
    /// `--control`.
    pub control: Option<ControlSocket>,
    /// `--reload-on-change`.
    pub watch: Option<FileWatch>,
    /// What `status` reports that does not change.
    pub fixed: status_report::Fixed,
}

/// How a stop ended, for start_server's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every worker, and everything workers left behind, exited after its signal.
    Clean,
    /// Something had to be sent SIGKILL (`--kill-old-timeout`, or a stray still there 5 seconds
    /// after its TERM).
    Killed,
}

impl Ending {
    /// 0 for a clean stop, 3 when something was killed (1 and 2 are errors).
    pub fn exit_code(self) -> i32 {
        match self {
            Ending::Clean => 0,
            Ending::Killed => 3,
        }
    }
}

/// The most workers per generation the control socket's `workers` accepts (as `--workers`).
const MAX_WORKERS: usize = u16::MAX as usize;

/// How long processes left behind get after SIGTERM (and again after SIGKILL) at exit.
pub const STRAY_GRACE: Duration = Duration::from_secs(5);

/// How long start_server waits for the `--log-file` command to finish writing at exit.
pub const LOGGER_GRACE: Duration = Duration::from_secs(5);

/// Runs the supervisor until every worker is gone after a terminating signal: wait, then feed
/// signals, child exits, workers' messages and the clock to the state machine, and carry out
/// what it answers.
pub fn run(rt: &mut Runtime, signals: &mut Signals, policy: Policy) -> Result<Ending> {
    // The envdir's settings are read again at every spawn, the first one included.
    let tunables = worker_env::tunables(&rt.base_env);
    let mut supervisor = Supervisor::new(policy, tunables, Instant::now());
    let actions = supervisor.start();
    run_from(rt, signals, Loop::new(rt, supervisor, actions))
}

/// Goes on with the supervisor an earlier program image handed over (an upgrade in place):
/// children that exited meanwhile are reaped first, then systemd and `--upgrade` hear that the
/// new image runs.
pub fn resume(
    rt: &mut Runtime,
    signals: &mut Signals,
    supervisor: Supervisor,
    carried: upgrade::LoopState,
    from: &str,
    state_bytes: usize,
) -> Result<Ending> {
    let mut state = Loop::new(rt, supervisor, Vec::new());
    state.reload_waiters = carried.reload_waiters;
    state.last_spawned = carried.last_spawned;
    state.on_child_exit(rt);
    let now = upgrade::version();
    info!(
        "start_server (pid:{}) upgraded from {from} to {now} ({state_bytes} bytes of state)",
        std::process::id()
    );
    if state.supervisor.announced_ready() {
        rt.notifier.ready(&format!(
            "upgraded to start_server {now}; {}",
            serving(&state.supervisor)
        ));
    }
    if let Some(control) = &mut rt.control {
        for client in carried.upgrade_waiters {
            let reply = Reply {
                version: Some(now.clone()),
                ..Reply::ok()
            };
            control.reply(client, &reply);
        }
    }
    upgrade::report(rt.handover.image.report.as_deref(), &Ok(now));
    run_from(rt, signals, state)
}

/// What serves, for the `STATUS=` that ends an upgrade: the summary systemd shows otherwise.
fn serving(supervisor: &Supervisor) -> String {
    let now = Instant::now();
    status_report::summary(&supervisor.snapshot(now), now)
}

/// The loop itself, from a fresh start or an upgrade.
fn run_from(rt: &mut Runtime, signals: &mut Signals, mut state: Loop) -> Result<Ending> {
    let result = serve_events(rt, signals, &mut state);
    if let Err(e) = &result {
        terminate_on_failure(&state.supervisor.worker_pids(), e);
    }
    result
}

/// The event loop failed and start_server is about to exit: its workers must not outlive it
/// with the sockets (nobody would stop or reap them), so each gets SIGTERM.
fn terminate_on_failure(pids: &[Pid], e: &crate::error::Error) {
    if !pids.is_empty() {
        error!("the event loop failed ({e}): sending TERM to workers {pids:?} before exiting");
        send(pids, Signal::SIGTERM);
    }
}

fn serve_events(rt: &mut Runtime, signals: &mut Signals, state: &mut Loop) -> Result<Ending> {
    loop {
        while let Some(action) = state.actions.pop_front() {
            if let Some(ending) = state.perform(rt, signals, action) {
                return Ok(ending);
            }
        }
        // Only between events, with nothing pending: the state handed over is whole.
        if std::mem::take(&mut state.upgrade_asked) {
            state.upgrade(rt);
        }
        let sources = Sources {
            notify: Some(&rt.worker_notify),
            watch: rt.watch.as_ref(),
            control: rt.control.as_ref(),
        };
        let ready = wait(signals, sources, state.deadline(rt))?;
        if ready.signals {
            for received in signals.drain()? {
                state.on_signal(rt, received);
            }
        }
        if ready.notify {
            state.on_messages(rt);
        }
        if ready.watch
            && let Some(watch) = &mut rt.watch
        {
            watch.on_ready(Instant::now());
        }
        if ready.control.iter().any(|r| !r.is_empty()) {
            state.on_control(rt, &ready.control);
        }
        state.on_clock(rt, Instant::now());
    }
}

/// The loop's state between two waits.
struct Loop {
    supervisor: Supervisor,
    /// What the supervisor asked for and is not done yet.
    actions: VecDeque<Action>,
    watchdog_every: Option<Duration>,
    next_watchdog: Option<Instant>,
    /// A terminating signal was received.
    stopping: bool,
    /// Something had to be sent SIGKILL while stopping.
    killed: bool,
    /// SIGUSR2 or `upgrade` was received: upgrade once the pending actions are done.
    upgrade_asked: bool,
    /// Control clients waiting for the upgrade's outcome.
    upgrade_waiters: Vec<ClientId>,
    /// The newest generation spawned so far.
    last_spawned: u64,
    /// Control clients waiting for a reload: answered by the first generation newer than the
    /// one given that comes up or fails.
    reload_waiters: Vec<(ClientId, u64)>,
}

impl Loop {
    fn new(rt: &Runtime, supervisor: Supervisor, actions: Vec<Action>) -> Loop {
        let watchdog_every = rt.notifier.watchdog_interval();
        Loop {
            supervisor,
            actions: actions.into(),
            watchdog_every,
            next_watchdog: watchdog_every.map(|every| Instant::now() + every),
            stopping: false,
            killed: false,
            upgrade_asked: false,
            upgrade_waiters: Vec::new(),
            last_spawned: 0,
            reload_waiters: Vec::new(),
        }
    }

    /// SIGUSR2 or `upgrade`: replace this program with the binary at its path, if that binary
    /// passes the check; otherwise (or if the exec fails) go on as before, saying why.
    fn upgrade(&mut self, rt: &mut Runtime) {
        let image = rt.handover.image.clone();
        info!(
            "upgrading start_server {} to {}",
            upgrade::version(),
            image.binary.display()
        );
        let refusal = self.try_upgrade(rt, &image);
        error!(
            "upgrade failed, start_server {} runs on: {refusal}",
            upgrade::version()
        );
        upgrade::report(image.report.as_deref(), &Err(refusal.clone()));
        let waiters = std::mem::take(&mut self.upgrade_waiters);
        if let Some(control) = &mut rt.control {
            let reply = Reply::error(format!(
                "{refusal}; start_server {} runs on as it was",
                upgrade::version()
            ));
            for client in waiters {
                control.reply(client, &reply);
            }
        }
    }

    /// Returns only if the upgrade did not happen, with why.
    fn try_upgrade(&mut self, rt: &mut Runtime, image: &upgrade::Image) -> upgrade::Refusal {
        let version = match upgrade::check(image) {
            Ok(version) => version,
            Err(refusal) => return refusal,
        };
        let state = match self.export(rt, image, Instant::now()) {
            Ok(state) => state,
            Err(refusal) => return refusal,
        };
        let memfd = match upgrade::write_state(&state) {
            Ok(fd) => fd,
            Err(refusal) => return refusal,
        };
        let mut fds = state.fds();
        fds.push(std::os::fd::AsRawFd::as_raw_fd(&memfd));
        if let Err(refusal) = upgrade::set_cloexec(&fds, false) {
            let _ = upgrade::set_cloexec(&fds, true);
            return refusal;
        }
        let announced = self.supervisor.announced_ready();
        if announced {
            rt.notifier
                .reloading(&format!("upgrading start_server to {version}"));
        }
        info!(
            "executing {} (start_server {version})",
            image.binary.display()
        );
        let refusal = upgrade::exec(image, std::os::fd::AsRawFd::as_raw_fd(&memfd));
        if let Err(e) = upgrade::set_cloexec(&fds, true) {
            warn!("{e}");
        }
        if announced {
            rt.notifier.ready(&format!(
                "upgrade failed ({refusal}); start_server {} runs on; {}",
                upgrade::version(),
                serving(&self.supervisor)
            ));
        }
        refusal
    }

    /// Everything the next image needs, at `now`.
    fn export(
        &self,
        rt: &Runtime,
        image: &upgrade::Image,
        now: Instant,
    ) -> std::result::Result<upgrade::State, upgrade::Refusal> {
        let text = |s: &OsStr, what: &str| {
            s.to_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{what} is not UTF-8: {s:?}"))
        };
        let argv = image
            .argv
            .iter()
            .map(|a| text(a, "the command line"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let unix_paths = rt
            .handover
            .unix_paths
            .iter()
            .map(|p| text(p.as_os_str(), "a socket path"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let (slots, floor) = rt.layout.export();
        let (notify_fd, notify_name) = rt.worker_notify.export();
        Ok(upgrade::State {
            format: upgrade::FORMAT,
            written_by: upgrade::version(),
            argv,
            binary: text(image.binary.as_os_str(), "the binary's path")?,
            supervisor: self.supervisor.export(now),
            sockets: upgrade::SocketsState {
                slots,
                floor,
                port_env: rt.port_env.clone(),
                listen_env: rt.listen_env.clone(),
                unix_paths,
            },
            pid_file_fd: rt.handover.pid_file_fd,
            status_written: rt
                .status
                .as_ref()
                .map_or((false, false), StatusFile::written),
            worker_notify: upgrade::NotifySocketState {
                fd: notify_fd,
                name: notify_name,
            },
            nofile: (rt.nofile.rlim_cur, rt.nofile.rlim_max),
            xfsz_was_ignored: crate::runtime::signals::xfsz_was_ignored(),
            logger: rt.logger.as_ref().map(|l| l.export(now)),
            started: -i64::try_from(now.saturating_duration_since(rt.fixed.started).as_micros())
                .unwrap_or(i64::MAX),
            socket_info: rt.fixed.sockets.clone(),
            control: rt.control.as_ref().map(ControlSocket::export),
            event_loop: upgrade::LoopState {
                reload_waiters: self.reload_waiters.clone(),
                last_spawned: self.last_spawned,
                upgrade_waiters: self.upgrade_waiters.clone(),
            },
        })
    }

    /// The earliest of the supervisor's timers, the watchdog, a worker's status held back and
    /// the log command's restart.
    fn deadline(&self, rt: &Runtime) -> Option<Instant> {
        let logger_due = rt.logger.as_ref().and_then(Logger::restart_due);
        [
            self.supervisor.next_deadline(),
            self.next_watchdog,
            rt.notifier.deadline(),
            logger_due,
            rt.watch.as_ref().and_then(FileWatch::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Carries out one action; the ending once the supervisor says to exit.
    fn perform(
        &mut self,
        rt: &mut Runtime,
        signals: &mut Signals,
        action: Action,
    ) -> Option<Ending> {
        match action {
            Action::Spawn { generation } => {
                self.last_spawned = self.last_spawned.max(generation);
                // Slot 0 is named only when there are several (unset means 0).
                let slot = (self.supervisor.slots() > 1).then_some(0);
                let result = rt.spawn(generation, slot, &mut self.supervisor);
                let next = self.supervisor.spawned(generation, result, Instant::now());
                self.actions.extend(next);
            }
            Action::SpawnCopy { generation, slot } => {
                self.last_spawned = self.last_spawned.max(generation);
                let result = rt.spawn(generation, Some(slot), &mut self.supervisor);
                let next = (self.supervisor).spawned_copy(generation, slot, result, Instant::now());
                self.actions.extend(next);
            }
            Action::Signal { pids, signal } => {
                self.killed |= self.stopping && signal == Signal::SIGKILL;
                send(&pids, signal)
            }
            Action::WriteStatus(workers) => {
                if let Some(Err(e)) = rt.status.as_mut().map(|s| s.write(&workers)) {
                    error!("{e}");
                }
            }
            Action::RecordFailure { generation, why } => {
                if let Some(Err(e)) = rt
                    .status
                    .as_mut()
                    .map(|s| s.record_failure(generation, &why))
                {
                    error!("{e}");
                }
            }
            Action::Notify(notice) => {
                rt.notifier.notice(&notice);
                if matches!(notice, Notice::Serving { .. }) {
                    let now = Instant::now();
                    let summary = status_report::summary(&self.supervisor.snapshot(now), now);
                    rt.notifier.status(&summary);
                }
                self.settle_reloads(rt, &notice);
            }
            Action::Exit => {
                self.killed |= rt.stop_strays(signals);
                return Some(if self.killed {
                    Ending::Killed
                } else {
                    Ending::Clean
                });
            }
        }
        None
    }

    /// One signal from the signalfd: every signal path is here.
    fn on_signal(&mut self, rt: &mut Runtime, received: Received) {
        match received {
            Received::Hangup => self.actions.extend(self.supervisor.hangup()),
            Received::Upgrade if self.stopping => {
                let why = "start_server is stopping".to_string();
                info!("received USR2 while stopping: no upgrade");
                upgrade::report(rt.handover.image.report.as_deref(), &Err(why));
            }
            Received::Upgrade => {
                info!("received USR2: upgrade in place");
                self.upgrade_asked = true;
            }
            Received::Terminate(signal) => self.terminate(signal),
            Received::Child => self.on_child_exit(rt),
            Received::Ignored => {}
            Received::Unused(number) => info!(
                "received {}, which start_server does not use: ignored",
                crate::config::signal_names::number_name(number)
            ),
        }
    }

    /// A terminating signal, or `stop` on the control socket.
    fn terminate(&mut self, signal: Signal) {
        self.stopping = true;
        let next = self.supervisor.terminate(signal, Instant::now());
        self.actions.extend(next)
    }

    /// The control socket and its clients: accept, read, answer.
    fn on_control(&mut self, rt: &mut Runtime, revents: &[PollFlags]) {
        let requests = match &mut rt.control {
            Some(control) => control.on_ready(revents),
            None => return,
        };
        for (client, request) in requests {
            if let Some(reply) = self.on_request(rt, client, request)
                && let Some(control) = &mut rt.control
            {
                control.reply(client, &reply);
            }
        }
    }

    /// One request; its reply, unless it comes later (a reload).
    fn on_request(&mut self, rt: &Runtime, client: ClientId, request: Request) -> Option<Reply> {
        match request {
            Request::Upgrade if self.stopping => Some(Reply::error("start_server is stopping")),
            Request::Upgrade => {
                info!("upgrade requested on the control socket");
                self.upgrade_waiters.push(client);
                self.upgrade_asked = true;
                None
            }
            Request::Status => {
                let snapshot = self.supervisor.snapshot(Instant::now());
                let dropped = crate::runtime::logging::dropped_total();
                Some(Reply {
                    status: Some(status_report::status(&rt.fixed, &snapshot, dropped)),
                    ..Reply::ok()
                })
            }
            Request::Reload if self.stopping => Some(Reply::error("start_server is stopping")),
            // One pending reload per client: its waiters stay as many as the clients.
            Request::Reload if self.reload_waiters.iter().any(|&(c, _)| c == client) => Some(
                Reply::error("a reload asked on this connection is not answered yet"),
            ),
            Request::Reload => {
                info!("reload requested on the control socket");
                self.reload_waiters.push((client, self.last_spawned));
                let next = (self.supervisor).request_reload(ReloadTrigger::Control, Instant::now());
                self.actions.extend(next);
                None
            }
            Request::Stop => {
                info!("stop requested on the control socket");
                self.terminate(Signal::SIGTERM);
                Some(Reply::ok())
            }
            Request::Workers { count } if !(1..=MAX_WORKERS).contains(&count) => Some(
                Reply::error(format!("workers: count must be 1 to {MAX_WORKERS}")),
            ),
            Request::Workers { count } => {
                info!("{count} workers per generation requested on the control socket");
                let next = self.supervisor.set_workers(count, Instant::now());
                self.actions.extend(next);
                Some(Reply::ok())
            }
        }
    }

    /// Answers the clients waiting for a reload that `notice` ends.
    fn settle_reloads(&mut self, rt: &mut Runtime, notice: &Notice) {
        if self.reload_waiters.is_empty() {
            return;
        }
        let settled = |after: u64| -> Option<Reply> {
            match notice {
                Notice::Serving { worker, .. } if worker.generation > after => Some(Reply {
                    generation: Some(worker.generation),
                    ..Reply::ok()
                }),
                Notice::StartFailed {
                    generation,
                    why,
                    serving,
                } if *generation > after => Some(Reply {
                    generation: Some(*generation),
                    ..Reply::error(format!(
                        "generation {generation} did not start ({why}); {}",
                        serving
                            .as_ref()
                            .map_or("nothing serves".to_string(), |w| format!(
                                "generation {} is still serving",
                                w.generation
                            ))
                    ))
                }),
                Notice::Stopping => Some(Reply::error("start_server is stopping")),
                _ => None,
            }
        };
        let Some(control) = &mut rt.control else {
            return;
        };
        self.reload_waiters
            .retain(|&(client, after)| match settled(after) {
                Some(reply) => {
                    control.reply(client, &reply);
                    false
                }
                None => true,
            });
    }

    /// SIGCHLD: each exited child goes to whoever owns it (the log command, the supervisor, or
    /// the strays); after a worker's exit, what it left behind is adopted.
    fn on_child_exit(&mut self, rt: &mut Runtime) {
        let mut worker_gone = false;
        for (pid, status) in reap() {
            if let Some(logger) = rt.logger.as_mut().filter(|l| l.pid() == Some(pid)) {
                logger.exited(status, Instant::now());
            } else if self.supervisor.worker_pids().contains(&pid) {
                worker_gone = true;
                let next = self.supervisor.child_exited(pid, status, Instant::now());
                self.actions.extend(next);
            } else {
                rt.strays.reaped(pid, status);
            }
        }
        if worker_gone {
            rt.adopt_strays(&self.supervisor.workers());
        }
    }

    /// Workers' notifications. A bounded batch, strangers dropped cheaply (see
    /// worker_notify): a flood of messages does not keep the loop from signals and child exits.
    fn on_messages(&mut self, rt: &mut Runtime) {
        for (worker, message) in rt.worker_notify.receive(&self.supervisor.worker_pids()) {
            let next = self.supervisor.notified(worker, &message, Instant::now());
            self.actions.extend(next);
        }
    }

    /// Timers: the log command's restart, systemd's watchdog, the supervisor's deadlines.
    fn on_clock(&mut self, rt: &mut Runtime, now: Instant) {
        if let Some(path) = rt.watch.as_mut().and_then(|w| w.due(now)) {
            info!("{} changed: reloading", path.display());
            let trigger = ReloadTrigger::FileChange(path.display().to_string());
            self.actions
                .extend(self.supervisor.request_reload(trigger, now));
        }
        if let Some(logger) = &mut rt.logger {
            logger.restart_if_due(now);
        }
        if let (Some(every), Some(due)) = (self.watchdog_every, self.next_watchdog)
            && now >= due
        {
            rt.notifier.watchdog();
            self.next_watchdog = Some(now + every);
        }
        rt.notifier.on_clock(now);
        self.actions.extend(self.supervisor.tick(now));
    }
}

/// The fds besides the signalfd that [`wait`] watches.
#[derive(Default)]
struct Sources<'a> {
    notify: Option<&'a WorkerNotify>,
    watch: Option<&'a FileWatch>,
    control: Option<&'a ControlSocket>,
}

/// Which sources have something to read after [`wait`].
struct Ready {
    signals: bool,
    notify: bool,
    watch: bool,
    /// The control socket's events, in its `poll_fds` order (empty without one).
    control: Vec<PollFlags>,
}

/// Sleeps until a signal, a worker's message, a change or a control client is pending, or
/// `deadline` passes; no deadline means no timeout.
fn wait(signals: &Signals, sources: Sources, deadline: Option<Instant>) -> Result<Ready> {
    let timeout = deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
    let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    let notify_at = sources.notify.map(|n| {
        fds.push(PollFd::new(n.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    let watch_at = sources.watch.map(|w| {
        fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    let control_from = fds.len();
    if let Some(control) = sources.control {
        fds.extend(
            control
                .poll_fds()
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        );
    }
    match ppoll(&mut fds, timeout, None) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e).context(|| "ppoll failed".to_string()),
    }
    let events = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
    let readable = |at: Option<usize>| {
        at.and_then(|i| fds.get(i))
            .is_some_and(|fd| !events(fd).is_empty())
    };
    Ok(Ready {
        signals: readable(Some(0)),
        notify: readable(notify_at),
        watch: readable(watch_at),
        control: fds[control_from..].iter().map(events).collect(),
    })
}

/// Waits (bounded) until none of `pids` is left, reaping them.
fn wait_for_exit(signals: &mut Signals, pids: &mut BTreeSet<Pid>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !pids.is_empty() && Instant::now() < deadline {
        for (pid, _) in reap() {
            pids.remove(&pid);
        }
        if pids.is_empty() || wait(signals, Sources::default(), Some(deadline)).is_err() {
            return;
        }
        if signals.drain().is_err() {
            return;
        }
    }
}

/// Waits for the log command to finish writing (bounded, in case a worker's descendant keeps
/// the pipe open).
pub fn wait_for_logger(signals: &mut Signals, logger: Pid, limit: Duration) {
    wait_for_exit(signals, &mut BTreeSet::from([logger]), limit);
}

/// Every child that has exited, without blocking.
fn reap() -> Vec<(Pid, ExitStatus)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return exited,
            Ok(status) => {
                if let Some(exit) = raw_status(status) {
                    exited.push(exit);
                }
            }
            Err(Errno::EINTR) => {}
            // ECHILD: no children left; nothing else is expected from a WNOHANG wait.
            Err(_) => return exited,
        }
    }
}

/// The wait status as the kernel encodes it (`ExitStatus` keeps that form); `None` for a
/// stop or continue, which a wait without WUNTRACED/WCONTINUED does not report.
fn raw_status(status: WaitStatus) -> Option<(Pid, ExitStatus)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ExitStatus((code & 0xff) << 8))),
        WaitStatus::Signaled(pid, signal, core) => Some((
            pid.as_raw(),
            ExitStatus(signal as i32 | if core { 0x80 } else { 0 }),
        )),
        _ => None,
    }
}

/// start_server's children, from /proc (a subreaper also has adopted orphans among them).
fn children() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn send(pids: &[Pid], signal: Signal) {
    for &pid in pids {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => error!("failed to send {} to worker {pid}: {}", signal, e.desc()),
        }
    }
}

impl Runtime {
    /// Children that are neither workers nor the log command were left behind by workers (a
    /// daemonized child, say): those of a generation that no longer runs get SIGTERM, and are
    /// reaped when they exit (see [`strays`]).
    fn adopt_strays(&mut self, workers: &[Worker]) {
        let logger = self.logger.as_ref().and_then(Logger::pid);
        let adopted = children()
            .into_iter()
            .filter(|&pid| logger != Some(pid) && !workers.iter().any(|w| w.pid == pid));
        let term = self.strays.sort(adopted, workers, strays::origin);
        send(&term, Signal::SIGTERM);
    }

    /// At exit: nothing a worker left behind outlives start_server (TERM, then KILL); as PID 1,
    /// nothing else either, since the kernel kills whatever is left when PID 1 exits. Returns
    /// whether something had to be killed.
    fn stop_strays(&mut self, signals: &mut Signals) -> bool {
        self.adopt_strays(&[]);
        send(&self.strays.stop_foreign(), Signal::SIGTERM);
        let mut strays = self.strays.take_strays();
        wait_for_exit(signals, &mut strays, STRAY_GRACE);
        if strays.is_empty() {
            return false;
        }
        let pids: Vec<Pid> = strays.iter().copied().collect();
        warn!("processes left behind still alive, sending KILL:{pids:?}");
        send(&pids, Signal::SIGKILL);
        wait_for_exit(signals, &mut strays, STRAY_GRACE);
        true
    }

    /// The environment of generation `generation`'s worker in `slot`, and the settings it
    /// implies.
    fn worker_env(
        &self,
        generation: u64,
        slot: Option<usize>,
    ) -> (Env, crate::supervisor::Tunables) {
        let mut env = self.base_env.clone();
        if let Some(dir) = &self.envdir {
            match worker_env::read_envdir(dir) {
                Ok(mut overlay) => {
                    for refused in std::mem::take(&mut overlay.refused) {
                        warn!("{refused}; skipped");
                    }
                    overlay.apply_to(&mut env);
                }
                Err(e) => warn!("failed to read envdir {}: {e}", dir.display()),
            }
        }
        let tunables = worker_env::tunables(&env);
        env.insert("SERVER_STARTER_PORT".into(), (&self.port_env).into());
        if let Some((count, names)) = &self.listen_env {
            env.insert("LISTEN_FDS".into(), count.into());
            env.insert("LISTEN_FDNAMES".into(), names.into());
        }
        env.insert(
            "NOTIFY_SOCKET".into(),
            self.worker_notify.env_value().into(),
        );
        env.insert(
            "SERVER_STARTER_GENERATION".into(),
            generation.to_string().into(),
        );
        if let Some(slot) = slot {
            env.insert("SERVER_STARTER_WORKER".into(), slot.to_string().into());
        }
        (env, tunables)
    }

    fn spawn(
        &self,
        generation: u64,
        slot: Option<usize>,
        supervisor: &mut Supervisor,
    ) -> std::result::Result<Pid, spawn::SpawnError> {
        let (env, tunables) = self.worker_env(generation, slot);
        supervisor.set_tunables(tunables);
        let program = crate::config::program::resolve(
            &self.command[0],
            env.get(OsStr::new("PATH")).map(OsString::as_os_str),
            self.dir.as_deref(),
        )?;
        let launch = Launch {
            program: spawn::c_string(program.into_os_string(), "the program path")?,
            argv: self
                .command
                .iter()
                .map(|a| spawn::c_string(a.clone(), "an argument"))
                .collect::<std::result::Result<_, _>>()?,
            env: worker_env::entries(&env)
                .filter_map(|e| spawn::c_string(e, "").ok())
                .collect(),
            dir: self
                .dir
                .as_ref()
                .map(|d| spawn::c_string(d.clone().into_os_string(), "--dir"))
                .transpose()?,
            nofile: self.nofile,
            listen_pid: self.listen_env.is_some(),
            watchdog_pid: env.contains_key(OsStr::new("WATCHDOG_USEC")),
            xfsz: crate::runtime::signals::child_xfsz(),
        };
        spawn::spawn(&self.layout, &launch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_event_loop_terminates_the_workers_it_leaves() {
        use std::os::unix::process::ExitStatusExt;
        let mut worker = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let pid = worker.id() as Pid;
        terminate_on_failure(&[pid], &crate::error::Error::runtime("ppoll failed"));
        let status = worker.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    }

    #[test]
    fn wait_statuses_keep_the_kernels_encoding() {
        let pid = nix::unistd::Pid::from_raw(42);
        let exited = raw_status(WaitStatus::Exited(pid, 1)).unwrap();
        assert_eq!(exited, (42, ExitStatus(256)));
        assert!(libc::WIFEXITED(exited.1.0) && libc::WEXITSTATUS(exited.1.0) == 1);
        let killed = raw_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)).unwrap();
        assert!(libc::WIFSIGNALED(killed.1.0) && libc::WTERMSIG(killed.1.0) == libc::SIGKILL);
        let dumped = raw_status(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)).unwrap();
        assert!(libc::WCOREDUMP(dumped.1.0) && libc::WTERMSIG(dumped.1.0) == libc::SIGSEGV);
        assert_eq!(raw_status(WaitStatus::Continued(pid)), None);
    }
}
