//! The event loop: it holds the parts of the running start_server, waits for what any of them
//! has to say ([`wait`]), hands each [`Event`] to the supervisor (or answers it), and carries out
//! the [`Action`]s the supervisor answers. It decides nothing itself: the supervisor decides,
//! each part does its own work behind its methods.

mod cgroups;
mod metrics;
mod requests;
mod upgrading;
pub mod wait;

use std::collections::VecDeque;
use std::time::Instant;

use nix::sys::signal::Signal;
use tracing::{error, info};

use crate::error::Result;
use crate::server::cgroup::tree::Cgroups;
use crate::server::control::Control;
use crate::server::control::status::{self, Fixed};
use crate::server::event::{Event, Received, Source};
use crate::server::file_watch::FileWatch;
use crate::server::files::pid_file::PidFile;
use crate::server::files::status_file::StatusFile;
use crate::server::log::output::Logger;
use crate::server::metrics::counters::Counters;
use crate::server::metrics::listen::MetricsListen;
use crate::server::notify::systemd::Notifier;
use crate::server::notify::workers::WorkerNotify;
use crate::server::probe::memory_watch::MemoryWatch;
use crate::server::probe::watch::ListeningWatch;
use crate::server::process::reap::{reap, send};
use crate::server::process::signals::Signals;
use crate::server::process::spawner::Spawner;
use crate::server::process::strays::Adopted;
use crate::server::upgrade::{Refusal, Upgrade};
use crate::supervisor::{Action, Notice, ReloadTrigger, Supervisor};
use crate::vocab::Pid;

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

/// The parts the loop runs, as `serve` built (or adopted) them.
pub struct Parts {
    pub anew: Anew,
    pub spawner: Spawner,
    pub workers_notify: WorkerNotify,
    pub systemd: Notifier,
    pub control: Option<Control>,
    pub logger: Option<Logger>,
    pub status_file: Option<StatusFile>,
    pub facts: Fixed,
    pub upgrade: Upgrade,
    pub pid_file: Option<PidFile>,
    /// A cgroup per generation, when start_server may have them.
    pub cgroups: Option<Cgroups>,
    /// `--metrics-listen`.
    pub metrics: Option<MetricsListen>,
    /// The server's counts (the supervisor keeps its own).
    pub counters: Counters,
}

/// What every program image sets up anew, a fresh start and an upgrade alike: nothing of it
/// crosses an exec. A new source of events that keeps nothing across an upgrade goes here.
pub struct Anew {
    pub signals: Signals,
    /// Processes left behind by workers (start_server is a subreaper).
    pub strays: Adopted,
    /// `--reload-on-change`.
    pub watch: Option<FileWatch>,
    /// `--ready=listening`: whether awaited workers listen (idle unless some are).
    pub listening: ListeningWatch,
    /// `--worker-max-memory`.
    pub memory: Option<MemoryWatch>,
}

/// How this image came to run: the upgrade it resumes from, or the one it rolled back from.
pub enum Resumed {
    /// From an image of version `from`.
    Upgraded { from: String },
    /// The next image could not take over, and why: this is the image before, running on.
    RolledBack { why: String },
}

/// What is left once the loop is over, for `serve` to finish with: the log command (which gets
/// a last chance to write), the signals (to wait for it) and the pid file (whose lock goes
/// last).
pub struct Remains {
    pub logger: Option<Logger>,
    pub signals: Signals,
    pub pid_file: Option<PidFile>,
}

/// The loop and what it runs.
pub struct EventLoop {
    supervisor: Supervisor,
    /// What the supervisor asked for and is not done yet.
    actions: VecDeque<Action>,
    parts: Parts,
    /// Something had to be sent SIGKILL while stopping.
    killed: bool,
}

impl EventLoop {
    /// The loop over `parts`, with `supervisor` and the actions it already asked for.
    pub fn new(supervisor: Supervisor, mut parts: Parts, actions: Vec<Action>) -> EventLoop {
        if let Some(cgroups) = &parts.cgroups {
            parts.anew.strays.by_cgroup(cgroups.root_path());
        }
        EventLoop {
            supervisor,
            actions: actions.into(),
            parts,
            killed: false,
        }
    }

    /// Runs until every worker is gone after a terminating signal. If the loop itself fails,
    /// the workers get SIGTERM first: they must not outlive start_server with the sockets.
    pub fn run(&mut self) -> Result<Ending> {
        let result = self.serve_events();
        if let Err(e) = &result {
            terminate_on_failure(&self.supervisor.worker_pids(), e);
        }
        result
    }

    /// What `serve` finishes with (see [`Remains`]); everything else goes now (the control
    /// socket's and the status file's files with it).
    pub fn finish(self) -> Remains {
        let mut parts = self.parts;
        parts.upgrade.remove_report();
        Remains {
            logger: parts.logger,
            signals: parts.anew.signals,
            pid_file: parts.pid_file,
        }
    }

    fn serve_events(&mut self) -> Result<Ending> {
        loop {
            while let Some(action) = self.actions.pop_front() {
                if let Some(ending) = self.perform(action) {
                    return Ok(ending);
                }
            }
            if let Some(refusal) = self.parts.upgrade.start_check(Instant::now()) {
                self.refuse_upgrade(&refusal);
            }
            // Only between events, with nothing pending: the state handed over is whole.
            if self.parts.upgrade.due() {
                self.upgrade_now();
            }
            for event in self.wait()? {
                self.dispatch(event);
            }
            let next = self.supervisor.tick(Instant::now());
            self.actions.extend(next);
        }
    }

    /// Sleeps until a source has something or the supervisor's next deadline.
    fn wait(&mut self) -> Result<Vec<Event>> {
        self.parts
            .workers_notify
            .track(&self.supervisor.worker_pids());
        let mut sources: Vec<&mut dyn Source> = vec![
            &mut self.parts.anew.signals,
            &mut self.parts.workers_notify,
            &mut self.parts.systemd,
        ];
        if let Some(control) = &mut self.parts.control {
            sources.push(control);
        }
        if let Some(watch) = &mut self.parts.anew.watch {
            sources.push(watch);
        }
        let awaited = self.supervisor.awaiting_listening();
        let spawner = &self.parts.spawner;
        let listening = &mut self.parts.anew.listening;
        listening.track(&awaited, || spawner.socket_inodes(), Instant::now());
        sources.push(listening);
        if let Some(logger) = &mut self.parts.logger {
            sources.push(logger);
        }
        sources.push(&mut self.parts.upgrade);
        if let Some(cgroups) = &mut self.parts.cgroups {
            sources.push(cgroups);
        }
        if let Some(metrics) = &mut self.parts.metrics {
            sources.push(metrics);
        }
        if let Some(memory) = &mut self.parts.anew.memory {
            sources.push(memory);
        }
        wait::wait(&mut sources, self.supervisor.next_deadline())
    }

    fn dispatch(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Signal(received) => self.on_signal(received),
            Event::Message { worker, text } => {
                let next = self.supervisor.notified(worker, &text, now);
                self.actions.extend(next);
            }
            Event::Listening { worker, how } => {
                let next = self.supervisor.listening(worker, &how, now);
                self.actions.extend(next);
            }
            Event::Request { client, request } => self.on_request(client, request),
            Event::Scrape => self.answer_scrapes(),
            Event::MemoryCheck => self.check_memory(),
            Event::UpgradeChecked => {
                if let Some(refusal) = self.parts.upgrade.checked() {
                    self.refuse_upgrade(&refusal);
                }
            }
            Event::Changed(path) => {
                info!("{} changed: reloading", path.display());
                let trigger = ReloadTrigger::FileChange(path.display().to_string());
                let next = self.supervisor.request_reload(trigger, now);
                self.actions.extend(next);
            }
        }
    }

    /// One signal from the signalfd: every signal path is here.
    fn on_signal(&mut self, received: Received) {
        match received {
            Received::Hangup => {
                let next = self.supervisor.hangup(Instant::now());
                self.actions.extend(next);
            }
            Received::Upgrade if self.supervisor.shutting_down() => {
                info!("received USR2 while stopping: no upgrade");
                self.parts
                    .upgrade
                    .report(&Err(Refusal::Stopping.to_string()));
            }
            Received::Upgrade => {
                info!("received USR2: upgrade in place");
                self.parts.upgrade.ask();
            }
            Received::Terminate(signal) => self.terminate(signal),
            Received::Child => self.on_child_exit(),
            Received::Ignored => {}
            Received::Unused(number) => info!(
                "received {}, which start_server does not use: ignored",
                crate::vocab::signal::number_name(number)
            ),
        }
    }

    /// A terminating signal, or `stop` on the control socket: an upgrade under way is given up.
    fn terminate(&mut self, signal: Signal) {
        if self.parts.upgrade.cancel() {
            self.refuse_upgrade(&Refusal::Stopping);
        }
        let next = self.supervisor.terminate(signal, Instant::now());
        self.actions.extend(next);
    }

    /// SIGCHLD: each exited child goes to whoever owns it (the log command, the supervisor, or
    /// the strays); after a worker's exit, what it left behind is adopted.
    fn on_child_exit(&mut self) {
        let mut worker_gone = false;
        for (pid, status) in reap() {
            if let Some(logger) = self.parts.logger.as_mut().filter(|l| l.pid() == Some(pid)) {
                logger.exited(status, Instant::now());
            } else if self.parts.upgrade.check_pid() == Some(pid) {
                self.parts.upgrade.check_exited(status);
            } else if self.supervisor.worker_pids().contains(&pid) {
                worker_gone = true;
                let next = self.supervisor.child_exited(pid, status, Instant::now());
                self.actions.extend(next);
            } else {
                self.parts.anew.strays.reaped(pid, status);
            }
        }
        self.sweep_cgroups();
        if worker_gone {
            let ours = self.not_workers();
            let workers = self.supervisor.workers();
            self.parts.anew.strays.adopt(&workers, &ours);
        }
    }

    /// Carries out one action; the ending once the supervisor says to exit.
    fn perform(&mut self, action: Action) -> Option<Ending> {
        match action {
            Action::Spawn { generation } => {
                // Slot 0 is named only when there are several (unset means 0).
                let slot = (self.supervisor.slots() > 1).then_some(0);
                let (tunables, result) = self.spawn_worker(generation, slot);
                let next = (self.supervisor).spawned(generation, tunables, result, Instant::now());
                self.actions.extend(next);
            }
            Action::SpawnCopy { generation, slot } => {
                let (tunables, result) = self.spawn_worker(generation, Some(slot));
                let next = (self.supervisor).spawned_copy(
                    generation,
                    slot,
                    tunables,
                    result,
                    Instant::now(),
                );
                self.actions.extend(next);
            }
            Action::Signal { pids, signal } => {
                self.killed |= self.supervisor.shutting_down() && signal == Signal::SIGKILL;
                send(&pids, signal);
                self.signalled(&pids, signal);
            }
            Action::WriteStatus(workers) => {
                if let Some(Err(e)) = self.parts.status_file.as_mut().map(|s| s.write(&workers)) {
                    error!("{e}");
                }
            }
            Action::RecordFailure { generation, why } => {
                if let Some(Err(e)) = self
                    .parts
                    .status_file
                    .as_mut()
                    .map(|s| s.record_failure(generation, &why))
                {
                    error!("{e}");
                }
            }
            Action::Notify(notice) => {
                self.parts.systemd.notice(&notice);
                if matches!(notice, Notice::Serving { .. }) {
                    let summary = self.serving();
                    self.parts.systemd.status(&summary);
                }
                if let Some(control) = &mut self.parts.control {
                    control.settle_reloads(&notice);
                }
            }
            Action::Exit => {
                self.killed |= self.stop_remains();
                return Some(if self.killed {
                    Ending::Killed
                } else {
                    Ending::Clean
                });
            }
        }
        None
    }

    /// What serves, as systemd's `STATUS=` shows it.
    fn serving(&self) -> String {
        let now = Instant::now();
        status::summary(&self.supervisor.snapshot(now), now)
    }

    /// start_server's children that are not workers: the log command, the upgrade's check.
    fn not_workers(&self) -> Vec<Pid> {
        let logger = self.parts.logger.as_ref().and_then(Logger::pid);
        logger
            .into_iter()
            .chain(self.parts.upgrade.check_pid())
            .collect()
    }
}

/// The event loop failed and start_server is about to exit: its workers must not outlive it
/// with the sockets (nobody would stop or reap them), so each gets SIGTERM.
fn terminate_on_failure(pids: &[Pid], e: &crate::error::Error) {
    if !pids.is_empty() {
        error!("the event loop failed ({e}): sending TERM to workers {pids:?} before exiting");
        send(pids, Signal::SIGTERM);
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
}
