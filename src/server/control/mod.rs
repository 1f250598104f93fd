//! The control socket's server side: the socket and its clients ([`socket`]), what `status`
//! answers ([`status`]), and the clients waiting for the outcome of a reload or an upgrade they
//! asked for ([`Control`]). What each request does to the supervisor is decided in the event
//! loop (`event_loop::requests`).

pub mod socket;
pub mod status;

use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::server::event::{ClientId, Event, Source};
use crate::supervisor::Notice;
use crate::wire::control::Reply;
use socket::ControlSocket;

/// The control socket, and who waits for what.
#[derive(Debug)]
pub struct Control {
    socket: ControlSocket,
    waiting: Waiting,
}

/// Clients waiting for an answer that comes later. (Handed over in an upgrade under the name
/// `event_loop`, where it was kept before.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Waiting {
    /// Clients waiting for a reload, each with the newest generation begun when it asked: the
    /// first newer one that comes up or fails answers it.
    #[serde(rename = "reload_waiters")]
    pub reloads: Vec<(ClientId, u64)>,
    /// Clients waiting for this upgrade's outcome.
    #[serde(rename = "upgrade_waiters")]
    pub upgrades: Vec<ClientId>,
}

impl Control {
    /// The control socket, nobody waiting yet (or as an upgrade handed them over).
    pub fn new(socket: ControlSocket, waiting: Waiting) -> Control {
        Control { socket, waiting }
    }

    /// The socket and its clients.
    pub fn socket(&self) -> &ControlSocket {
        &self.socket
    }

    /// Who waits for what, for an upgrade to hand over.
    pub fn waiting(&self) -> &Waiting {
        &self.waiting
    }

    /// Sends `reply` to `client`, if it is still there.
    pub fn reply(&mut self, client: ClientId, reply: &Reply) {
        self.socket.reply(client, reply);
    }

    /// Whether `client` already waits for a reload (one per connection).
    pub fn awaits_reload(&self, client: ClientId) -> bool {
        self.waiting.reloads.iter().any(|&(c, _)| c == client)
    }

    /// `client` waits for the first generation after `newest` to come up or fail.
    pub fn await_reload(&mut self, client: ClientId, newest: u64) {
        self.waiting.reloads.push((client, newest));
    }

    /// `client` waits for the upgrade's outcome.
    pub fn await_upgrade(&mut self, client: ClientId) {
        self.waiting.upgrades.push(client);
    }

    /// Answers the clients waiting for a reload that `notice` ends.
    pub fn settle_reloads(&mut self, notice: &Notice) {
        let socket = &mut self.socket;
        self.waiting
            .reloads
            .retain(|&(client, after)| match settled(notice, after) {
                Some(reply) => {
                    socket.reply(client, &reply);
                    false
                }
                None => true,
            });
    }

    /// Answers the clients waiting for the upgrade: `Ok(version)` from the new program, or why
    /// it did not happen.
    pub fn answer_upgrade(&mut self, outcome: &std::result::Result<String, String>) {
        let reply = match outcome {
            Ok(version) => Reply {
                version: Some(version.clone()),
                ..Reply::ok()
            },
            Err(why) => Reply::error(why.clone()),
        };
        for client in std::mem::take(&mut self.waiting.upgrades) {
            self.socket.reply(client, &reply);
        }
    }
}

/// The listener and each client; requests become events, bad lines are answered here.
impl Source for Control {
    fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.socket.poll_fds()
    }

    fn on_ready(&mut self, ready: &[PollFlags], _: Instant, events: &mut Vec<Event>) -> Result<()> {
        if !ready.iter().all(PollFlags::is_empty) {
            let requests = self.socket.on_ready(ready);
            events.extend(
                requests
                    .into_iter()
                    .map(|(client, request)| Event::Request { client, request }),
            );
        }
        Ok(())
    }
}

/// The reply `notice` gives a client waiting for a generation after `after`, if it ends its
/// wait.
fn settled(notice: &Notice, after: u64) -> Option<Reply> {
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
                still_serving(serving.as_ref())
            ))
        }),
        Notice::Baked { worker, baked } if worker.generation > after => Some(Reply {
            generation: Some(worker.generation),
            baked: Some(baked.as_secs_f64()),
            ..Reply::ok()
        }),
        Notice::RolledBack {
            generation,
            why,
            serving,
        } if *generation > after => Some(Reply {
            generation: Some(*generation),
            ..Reply::error(format!(
                "rolled back: {why}; {}",
                still_serving(serving.as_ref())
            ))
        }),
        Notice::Stopping => Some(Reply::error("start_server is stopping")),
        _ => None,
    }
}

/// What serves after a failed reload, as a reply says it.
fn still_serving(serving: Option<&crate::supervisor::Worker>) -> String {
    serving.map_or("nothing serves".to_string(), |w| {
        format!("generation {} is still serving", w.generation)
    })
}
