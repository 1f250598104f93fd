//! The loop's side of an upgrade in place: executing the checked binary with every part handed
//! over, saying why it did not happen, and, in the image that runs next (or the one rolled back
//! to), saying how it went.

use tracing::info;

use super::{EventLoop, Resumed};
use crate::server::upgrade::Refusal;
use crate::server::upgrade::handover::Parts as HandoverParts;
use crate::server::upgrade::version::version;

impl EventLoop {
    /// After an upgrade in place, in the new image (or the old one an upgrade rolled back to):
    /// children that exited meanwhile are reaped first, then systemd, the log, the report file
    /// and the control clients that asked hear how the upgrade went.
    pub fn resumed(&mut self, how: Resumed, state_bytes: usize) {
        self.on_child_exit();
        let now = version();
        let outcome = match how {
            Resumed::Upgraded { from } => {
                self.parts.counters.upgrades_ok += 1;
                info!(
                    "start_server (pid:{}) upgraded from {from} to {now} ({state_bytes} bytes of \
                     state)",
                    std::process::id()
                );
                if self.supervisor.announced_ready() {
                    let status = format!("upgraded to start_server {now}; {}", self.serving());
                    self.parts.systemd.ready(&status);
                }
                Ok(now)
            }
            Resumed::RolledBack { why } => {
                self.parts.counters.upgrades_rolled_back += 1;
                let why = format!("rolled back: the new program could not take over: {why}");
                if self.supervisor.announced_ready() {
                    let status = format!(
                        "upgrade {why}; start_server {now} runs on; {}",
                        self.serving()
                    );
                    self.parts.systemd.ready(&status);
                }
                self.parts.upgrade.refused(&why);
                Err(format!("{why}; start_server {now} runs on as it was"))
            }
        };
        if let Some(control) = &mut self.parts.control {
            control.answer_upgrade(&outcome);
        }
        if let Ok(version) = outcome {
            self.parts.upgrade.report(&Ok(version));
        }
    }

    /// The binary passed its check: replace this program with it, handing everything over;
    /// otherwise (the exec failed) go on as before, saying why.
    pub(super) fn upgrade_now(&mut self) {
        let serving = self.serving();
        let parts = HandoverParts {
            supervisor: &self.supervisor,
            spawner: &self.parts.spawner,
            pid_file: self.parts.pid_file.as_ref(),
            status_file: self.parts.status_file.as_ref(),
            workers_notify: &self.parts.workers_notify,
            logger: self.parts.logger.as_ref(),
            facts: &self.parts.facts,
            control: self.parts.control.as_ref(),
            cgroups: self.parts.cgroups.as_ref(),
            metrics: self.parts.metrics.as_ref(),
            counters: self.parts.counters.export(
                crate::server::log::loss::dropped_total(),
                self.parts.workers_notify.rejected(),
            ),
        };
        let refusal = (self.parts.upgrade).execute(&parts, &self.parts.systemd, &serving);
        self.refuse_upgrade(&refusal);
    }

    /// The upgrade did not happen: the log, the report file and the clients waiting hear why.
    pub(super) fn refuse_upgrade(&mut self, refusal: &Refusal) {
        self.parts.counters.upgrades_refused += 1;
        let why = refusal.to_string();
        self.parts.upgrade.refused(&why);
        if let Some(control) = &mut self.parts.control {
            control.answer_upgrade(&Err(format!(
                "{why}; start_server {} runs on as it was",
                version()
            )));
        }
    }
}
