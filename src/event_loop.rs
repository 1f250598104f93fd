//! The OS side of the supervisor: one blocking `ppoll` on the signalfd, with the timeout of the
//! supervisor's next deadline (none while idle), then the events it reports fed to the state
//! machine and the actions it answers carried out. Every signal path is in [`run`].

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use tracing::{error, warn};

use crate::error::{Context, Result};
use crate::notify::Notifier;
use crate::signals::{Received, Signals};
use crate::spawn::{self, FdLayout, Launch};
use crate::status_file::StatusFile;
use crate::supervisor::{Action, ExitStatus, Pid, Policy, Supervisor, Tunables};
use crate::worker_env::{self, Env};

/// What the loop needs to make and watch workers.
pub struct Runtime {
    /// The sockets and where they go.
    pub layout: FdLayout,
    /// `SERVER_STARTER_PORT`, absent when there are no sockets.
    pub port_env: Option<String>,
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
    pub logger: Option<Pid>,
    /// systemd's notification socket.
    pub notifier: Notifier,
}

/// Runs the supervisor until every worker is gone after a terminating signal.
pub fn run(rt: &mut Runtime, signals: &mut Signals, policy: Policy) -> Result<()> {
    // The envdir's settings are read again at every spawn, the first one included.
    let tunables = worker_env::tunables(&rt.base_env);
    let mut supervisor = Supervisor::new(policy, tunables, Instant::now());
    let mut actions: VecDeque<Action> = supervisor.start().into();
    let watchdog_every = rt.notifier.watchdog_interval();
    let mut next_watchdog = watchdog_every.map(|every| Instant::now() + every);
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Spawn { generation } => {
                    let result = rt.spawn(generation, &mut supervisor);
                    actions.extend(supervisor.spawned(generation, result, Instant::now()));
                }
                Action::Signal { pids, signal } => send(&pids, signal),
                Action::WriteStatus(workers) => {
                    if let Some(status) = &mut rt.status
                        && let Err(e) = status.write(&workers)
                    {
                        error!("{e}");
                    }
                }
                Action::Notify(notice) => rt.notifier.notice(&notice),
                Action::Exit => return Ok(()),
            }
        }
        let deadline = [supervisor.next_deadline(), next_watchdog]
            .into_iter()
            .flatten()
            .min();
        wait(signals, deadline)?;
        for received in signals.drain()? {
            match received {
                Received::Hangup => actions.extend(supervisor.hangup()),
                Received::Terminate(signal) => actions.extend(supervisor.terminate(signal)),
                Received::Child => {
                    for (pid, status) in reap() {
                        if rt.logger == Some(pid) {
                            rt.logger = None;
                            warn!("the log command exited, status:{status}");
                        } else {
                            actions.extend(supervisor.child_exited(pid, status));
                        }
                    }
                }
                Received::Ignored => {}
            }
        }
        let now = Instant::now();
        if let (Some(every), Some(due)) = (watchdog_every, next_watchdog)
            && now >= due
        {
            rt.notifier.watchdog();
            next_watchdog = Some(now + every);
        }
        actions.extend(supervisor.tick(now));
    }
}

/// Sleeps until a signal is pending or `deadline` passes; no deadline means no timeout.
fn wait(signals: &Signals, deadline: Option<Instant>) -> Result<()> {
    let timeout = deadline.map(|d| TimeSpec::from(d.saturating_duration_since(Instant::now())));
    let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
    match ppoll(&mut fds, timeout, None) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e).context(|| "ppoll failed".to_string()),
    }
}

/// Waits for the log command to finish writing (bounded, in case a worker's descendant keeps
/// the pipe open).
pub fn wait_for_logger(signals: &mut Signals, logger: Pid, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if reap().iter().any(|(pid, _)| *pid == logger) {
            return;
        }
        if wait(signals, Some(deadline)).is_err() || signals.drain().is_err() {
            return;
        }
    }
}

/// Every child that has exited, without blocking.
fn reap() -> Vec<(Pid, ExitStatus)> {
    let mut exited = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return exited;
        }
        exited.push((pid, ExitStatus(status)));
    }
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
    /// The environment of generation `generation`'s worker, and the settings it implies.
    fn worker_env(&self, generation: u64) -> (Env, Tunables) {
        let mut env = self.base_env.clone();
        if let Some(dir) = &self.envdir {
            match worker_env::read_envdir(dir) {
                Ok(overlay) => env.extend(overlay),
                Err(e) => warn!("failed to read envdir {}: {e}", dir.display()),
            }
        }
        let tunables = worker_env::tunables(&env);
        if let Some(ports) = &self.port_env {
            env.insert("SERVER_STARTER_PORT".into(), ports.into());
        }
        if let Some((count, names)) = &self.listen_env {
            env.insert("LISTEN_FDS".into(), count.into());
            env.insert("LISTEN_FDNAMES".into(), names.into());
        }
        env.insert(
            "SERVER_STARTER_GENERATION".into(),
            generation.to_string().into(),
        );
        (env, tunables)
    }

    fn spawn(
        &self,
        generation: u64,
        supervisor: &mut Supervisor,
    ) -> std::result::Result<Pid, String> {
        let (env, tunables) = self.worker_env(generation);
        supervisor.set_tunables(tunables);
        let program = crate::program::resolve(
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
        };
        spawn::spawn(&self.layout, &launch)
    }
}
