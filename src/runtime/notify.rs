//! Telling systemd how start_server is doing, through `NOTIFY_SOCKET`: `READY=1` when a
//! generation serves, `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts (the
//! `Type=notify-reload` protocol), `STOPPING=1`, `STATUS=` lines and `WATCHDOG=1`.
//!
//! Messages are formatted by `sd-notify`'s `NotifyState`; sending is done here because that
//! crate does not reach sockets in the abstract namespace (`NOTIFY_SOCKET=@name`), which systemd
//! and test harnesses use.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

use crate::supervisor::Notice;

/// The connection to systemd's notification socket; does nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog only applies when
    /// `WATCHDOG_PID`, if set, is this process).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = server_starter_worker::ready::socket_addr(&path);
            match (UnixDatagram::unbound(), addr) {
                (Ok(socket), Ok(addr)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!("cannot use NOTIFY_SOCKET={path:?}: {e}");
                    None
                }
            }
        });
        Notifier {
            target,
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to send `WATCHDOG=1` (half the watchdog timeout), if the watchdog is on.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|timeout| timeout / 2)
    }

    /// Sends what `notice` means to systemd.
    pub fn notice(&self, notice: &Notice) {
        if self.target.is_none() {
            return;
        }
        match notice {
            Notice::Serving { worker, status } => {
                let status = format!(
                    "generation {} (pid {}) serving{}",
                    worker.generation,
                    worker.pid,
                    status.as_ref().map_or(String::new(), |s| format!(": {s}"))
                );
                self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
            Notice::Reloading => match sd_notify::NotifyState::monotonic_usec_now() {
                Ok(now) => self.send(&[
                    NotifyState::Reloading,
                    now,
                    NotifyState::Status("reloading: starting a new generation"),
                ]),
                Err(e) => warn!("cannot read CLOCK_MONOTONIC: {e}"),
            },
            Notice::StartFailed {
                generation,
                why,
                serving,
            } => match serving {
                Some(old) => {
                    let status = format!(
                        "reload failed: generation {generation} did not start ({why}); \
                         generation {} (pid {}) still serving",
                        old.generation, old.pid
                    );
                    self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
                }
                None => {
                    let status = format!("generation {generation} did not start ({why}); retrying");
                    self.send(&[NotifyState::Status(&status)]);
                }
            },
            Notice::WorkerStatus { worker, status } => {
                let status = format!(
                    "generation {} (pid {}) serving: {status}",
                    worker.generation, worker.pid
                );
                self.send(&[NotifyState::Status(&status)]);
            }
            Notice::BackingOff { failures, delay } => {
                let status = format!(
                    "no worker serving: {failures} failed starts in a row, \
                     next attempt in {} secs",
                    delay.as_secs_f64()
                );
                self.send(&[NotifyState::Status(&status)]);
            }
            Notice::Stopping => self.send(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: waiting for the workers to exit"),
            ]),
        }
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` and `status`: an upgrade in place begins.
    pub fn reloading(&self, status: &str) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            Err(e) => warn!("cannot read CLOCK_MONOTONIC: {e}"),
        }
    }

    /// `READY=1` with `status`: an upgrade in place is over (done or given up).
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`: start_server's loop is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, states: &[NotifyState]) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            warn!("failed to notify systemd: {e}");
        }
    }
}
