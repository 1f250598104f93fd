//! What each control request does: the loop's answer to [`Event::Request`](crate::server::event::Event).

use std::time::Instant;

use tracing::info;

use super::EventLoop;
use crate::server::control::status;
use crate::server::event::ClientId;
use crate::supervisor::ReloadTrigger;
use crate::wire::control::{Reply, Request};

/// The most workers per generation the control socket's `workers` accepts (as `--workers`).
const MAX_WORKERS: usize = u16::MAX as usize;

impl EventLoop {
    /// Answers one request now, or notes who waits for its answer (a reload, an upgrade).
    pub(super) fn on_request(&mut self, client: ClientId, request: Request) {
        if let Some(reply) = self.answer(client, request)
            && let Some(control) = &mut self.parts.control
        {
            control.reply(client, &reply);
        }
    }

    /// One request; its reply, unless it comes later.
    fn answer(&mut self, client: ClientId, request: Request) -> Option<Reply> {
        let now = Instant::now();
        let stopping = self.supervisor.shutting_down();
        let control = self.parts.control.as_mut()?;
        match request {
            Request::Upgrade if stopping => Some(Reply::error("start_server is stopping")),
            Request::Upgrade => {
                info!("upgrade requested on the control socket");
                control.await_upgrade(client);
                self.parts.upgrade.ask();
                None
            }
            Request::Status { usage } => {
                let snapshot = self.supervisor.snapshot(now);
                let dropped = self.log_lines_dropped();
                let mut status = status::status(&self.parts.facts, &snapshot, dropped);
                self.add_usage(&mut status, usage);
                Some(Reply {
                    status: Some(status),
                    ..Reply::ok()
                })
            }
            Request::Metrics => Some(Reply {
                metrics: Some(self.metrics_text()),
                ..Reply::ok()
            }),
            Request::Reload if stopping => Some(Reply::error("start_server is stopping")),
            // One pending reload per client: its waiters stay as many as the clients.
            Request::Reload if control.awaits_reload(client) => Some(Reply::error(
                "a reload asked on this connection is not answered yet",
            )),
            Request::Reload => {
                info!("reload requested on the control socket");
                control.await_reload(client, self.supervisor.generation());
                let next = (self.supervisor).request_reload(ReloadTrigger::Control, now);
                self.actions.extend(next);
                None
            }
            Request::Stop => {
                info!("stop requested on the control socket");
                self.terminate(nix::sys::signal::Signal::SIGTERM);
                Some(Reply::ok())
            }
            Request::Workers { count } if !(1..=MAX_WORKERS).contains(&count) => Some(
                Reply::error(format!("workers: count must be 1 to {MAX_WORKERS}")),
            ),
            Request::Workers { count } => {
                info!("{count} workers per generation requested on the control socket");
                let next = self.supervisor.set_workers(count, now);
                self.actions.extend(next);
                Some(Reply::ok())
            }
        }
    }
}
