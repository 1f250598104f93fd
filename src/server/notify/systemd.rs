//! Telling systemd how start_server is doing, through `NOTIFY_SOCKET`: `READY=1` when a
//! generation serves, `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts (the
//! `Type=notify-reload` protocol), `STOPPING=1`, `STATUS=` lines and `WATCHDOG=1`; and the
//! sockets kept in systemd's file descriptor store (`FDSTORE=1` with the fd attached).
//!
//! Messages are formatted by `sd-notify`'s `NotifyState`; sending is done here because that
//! crate does not reach sockets in the abstract namespace (`NOTIFY_SOCKET=@name`), which systemd
//! and test harnesses use.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

use sd_notify::NotifyState;
use tracing::warn;

use crate::error::Result;
use crate::server::event::{Event, Source};
use crate::supervisor::Notice;
use crate::vocab::Secs;

/// How long `barrier` waits for systemd (sd_notify_barrier's usual bound).
const BARRIER_TIMEOUT_MS: u16 = 5000;

/// The shortest time between two forwarded `STATUS=` lines of a worker.
const WORKER_STATUS_EVERY: Duration = Duration::from_secs(1);

/// How much longer than a bake's own length systemd is asked to wait for the `READY=1` that
/// ends the reload (`EXTEND_TIMEOUT_USEC=`): the promotion follows the bake at once, a canary's
/// roll within seconds.
const BAKE_GRACE: Duration = Duration::from_secs(10);

/// The connection to systemd's notification socket; does nothing when there is none.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// `WATCHDOG=1` every this often (half the watchdog timeout), and when next.
    watchdog: Option<(Duration, Instant)>,
    fd_store: bool,
    /// Messages dropped because systemd's socket was full, since the last that got through.
    dropped: Cell<u64>,
    /// A worker's `STATUS=` lines, forwarded only when changed and at most once a second.
    worker_status: RefCell<StatusGate>,
}

/// Rate limit for the current worker's `STATUS=` lines: a worker saying something new in a loop
/// must not flood systemd. The newest line held back is sent once the second is over.
#[derive(Debug, Default)]
struct StatusGate {
    /// The worker's line systemd shows now (None once another `STATUS=` replaced it).
    shown: Option<String>,
    /// When a worker's line was last sent.
    sent_at: Option<Instant>,
    /// The newest line held back.
    pending: Option<String>,
}

impl StatusGate {
    /// Whether `text` is to be sent now; otherwise it is kept (if new) for [`StatusGate::due`].
    fn offer(&mut self, text: String, now: Instant) -> bool {
        if self.shown.as_deref() == Some(text.as_str()) {
            self.pending = None;
            return false;
        }
        if self
            .sent_at
            .is_some_and(|at| now < at + WORKER_STATUS_EVERY)
        {
            self.pending = Some(text);
            return false;
        }
        self.shown = Some(text);
        self.sent_at = Some(now);
        true
    }

    /// When the line held back may be sent.
    fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        self.sent_at.map(|at| at + WORKER_STATUS_EVERY)
    }

    /// The line held back, once its time has come.
    fn due(&mut self, now: Instant) -> Option<String> {
        if self.deadline().is_some_and(|due| now >= due) {
            let text = self.pending.take()?;
            return self.offer(text.clone(), now).then_some(text);
        }
        None
    }

    /// Another `STATUS=` was sent: a worker's line held back would now overwrite it.
    fn replaced(&mut self) {
        self.shown = None;
        self.pending = None;
    }
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog only applies when
    /// `WATCHDOG_PID`, if set, is this process).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = server_starter_worker::conventions::notify_socket_addr(&path);
            // Non-blocking: a systemd that does not read must not stop start_server's loop.
            let socket = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
            match (socket, addr) {
                (Ok(socket), Ok(addr)) => Some((socket, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    warn!("cannot use NOTIFY_SOCKET={path:?}: {e}");
                    None
                }
            }
        });
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|_| target.is_some())
            .map(|timeout| (timeout / 2, Instant::now() + timeout / 2));
        Notifier {
            target,
            watchdog,
            fd_store: fd_store_offered(std::env::var("FDSTORE").ok().as_deref()),
            dropped: Cell::new(0),
            worker_status: RefCell::new(StatusGate::default()),
        }
    }

    /// Whether systemd keeps file descriptors for this service: `$FDSTORE` (the unit's
    /// `FileDescriptorStoreMax=`, set by systemd 254 and later) is above 0 and there is a
    /// notification socket to send them through.
    pub fn fd_store(&self) -> bool {
        self.fd_store && self.target.is_some()
    }

    /// Keeps `fd` in the file descriptor store as `name`, replacing an older copy of that name
    /// (systemd would otherwise keep both). Returns whether it was sent.
    pub fn store_fd(&self, name: &str, fd: BorrowedFd<'_>) -> bool {
        self.remove_fd(name);
        // Written here: sd-notify has these states only with a feature that sends by itself.
        let message = format!("FDSTORE=1\nFDNAME={name}\n");
        match self.send_with_fd(message.as_bytes(), fd) {
            Ok(()) => true,
            Err(e) => {
                warn!("failed to keep socket {name} in systemd's file descriptor store: {e}");
                false
            }
        }
    }

    /// Removes (and so closes) every fd named `name` from the file descriptor store.
    pub fn remove_fd(&self, name: &str) {
        let name = format!("FDNAME={name}");
        self.send(&[
            NotifyState::Custom("FDSTOREREMOVE=1"),
            NotifyState::Custom(&name),
        ]);
    }

    /// Waits (a bounded time) until systemd has processed every message sent before: `BARRIER=1`
    /// comes with the write end of a pipe, which systemd closes once it gets there.
    pub fn barrier(&self) {
        if self.target.is_none() {
            return;
        }
        let result = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(std::io::Error::from)
            .and_then(|(read, write)| {
                self.send_with_fd(b"BARRIER=1\n", write.as_fd())?;
                drop(write);
                let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(BARRIER_TIMEOUT_MS))? {
                    0 => Err(std::io::ErrorKind::TimedOut.into()),
                    _ => Ok(()),
                }
            });
        if let Err(e) = result {
            warn!("systemd did not confirm the removal from its file descriptor store: {e}");
        }
    }

    fn send_with_fd(&self, message: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        let to = match (addr.as_pathname(), addr.as_abstract_name()) {
            (Some(path), _) => UnixAddr::new(path)?,
            (None, Some(name)) => UnixAddr::new_abstract(name)?,
            (None, None) => return Err(std::io::ErrorKind::InvalidInput.into()),
        };
        let fds = [fd.as_raw_fd()];
        sendmsg(
            socket.as_raw_fd(),
            &[IoSlice::new(message)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        )?;
        Ok(())
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
                let now = Instant::now();
                if self.worker_status.borrow_mut().offer(status.clone(), now) {
                    self.send_raw(&[NotifyState::Status(&status)]);
                }
            }
            Notice::BackingOff { failures, delay } => {
                let status = format!(
                    "no worker serving: {failures} failed starts in a row, \
                     next attempt in {}",
                    Secs(*delay)
                );
                self.send(&[NotifyState::Status(&status)]);
            }
            Notice::CrashLoop { failures, serving } => {
                let status = match serving {
                    Some(old) => format!(
                        "crash loop: {failures} failed starts in a row; generation {} (pid {}) \
                         still serving",
                        old.generation, old.pid
                    ),
                    None => {
                        format!("crash loop: {failures} failed starts in a row, no worker serving")
                    }
                };
                self.send(&[NotifyState::Status(&status)]);
            }
            Notice::CrashLoopOver { serving } => {
                let status = format!(
                    "generation {} (pid {}) serving",
                    serving.generation, serving.pid
                );
                self.send(&[NotifyState::Status(&status)]);
            }
            Notice::Baking {
                generation,
                canary,
                left,
                serving,
            } => {
                // The reload's READY=1 comes once the bake is over: a bake that outlasts the
                // unit's TimeoutStartSec= (which bounds a reload) extends it. systemd never
                // shortens a timeout this way, so it is sent whatever the unit's is.
                let extend = format!("EXTEND_TIMEOUT_USEC={}", (*left + BAKE_GRACE).as_micros());
                let which = canary.map_or(String::new(), |slot| format!(" (its slot {slot})"));
                let beside = serving.map_or(String::new(), |w| {
                    format!(" beside generation {} (pid {})", w.generation, w.pid)
                });
                let status = format!(
                    "reloading: generation {generation}{which} is up and bakes {}{beside}",
                    Secs(*left)
                );
                self.send(&[NotifyState::Custom(&extend), NotifyState::Status(&status)]);
            }
            // `Serving` follows, with READY=1.
            Notice::Baked { .. } => {}
            Notice::RolledBack {
                generation: _,
                why,
                serving,
            } => {
                let status = format!(
                    "reload rolled back: {why}; {}",
                    serving.map_or("no generation serving".to_string(), |w| format!(
                        "generation {} (pid {}) still serving",
                        w.generation, w.pid
                    ))
                );
                self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
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

    /// A `STATUS=` line of the runtime's own (the summary of the whole state).
    pub fn status(&self, text: &str) {
        self.send(&[NotifyState::Status(text)]);
    }

    /// When `WATCHDOG=1` is due, or a worker's `STATUS=` line held back by the rate limit.
    pub fn deadline(&self) -> Option<Instant> {
        let watchdog = self.watchdog.map(|(_, next)| next);
        [watchdog, self.worker_status.borrow().deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends `WATCHDOG=1` (start_server's loop is alive) and a worker's `STATUS=` line held
    /// back, once their time has come.
    pub fn on_clock(&mut self, now: Instant) {
        if let Some((every, next)) = self.watchdog
            && now >= next
        {
            self.send(&[NotifyState::Watchdog]);
            self.watchdog = Some((every, now + every));
        }
        let due = self.worker_status.borrow_mut().due(now);
        if let Some(status) = due {
            self.send_raw(&[NotifyState::Status(&status)]);
        }
    }

    /// Sends a message of start_server's own: a `STATUS=` in it replaces a worker's line.
    fn send(&self, states: &[NotifyState]) {
        if states.iter().any(|s| matches!(s, NotifyState::Status(_))) {
            self.worker_status.borrow_mut().replaced();
        }
        self.send_raw(states);
    }

    /// Sends without waiting: a message systemd has no room for is dropped and counted, and
    /// said once (not per message) until one gets through again.
    fn send_raw(&self, states: &[NotifyState]) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        match socket.send_to_addr(message.as_bytes(), addr) {
            Ok(_) => {
                let dropped = self.dropped.replace(0);
                if dropped > 0 {
                    warn!("{dropped} messages to systemd were dropped: its socket was full");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if self.dropped.get() == 0 {
                    warn!("systemd's notification socket is full: dropping messages");
                }
                self.dropped.set(self.dropped.get() + 1);
            }
            Err(e) => warn!("failed to notify systemd: {e}"),
        }
    }
}

impl Source for Notifier {
    fn deadline(&self) -> Option<Instant> {
        Notifier::deadline(self)
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, _: &mut Vec<Event>) -> Result<()> {
        self.on_clock(now);
        Ok(())
    }
}

/// `$FDSTORE`: the most fds systemd keeps; 0, unset or garbage means no store.
fn fd_store_offered(value: Option<&str>) -> bool {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_offered_only_with_a_positive_count() {
        assert!(fd_store_offered(Some("16")));
        assert!(!fd_store_offered(Some("0")));
        assert!(!fd_store_offered(Some("lots")));
        assert!(!fd_store_offered(None));
    }

    #[test]
    fn a_workers_status_is_forwarded_when_changed_and_at_most_once_a_second() {
        let mut gate = StatusGate::default();
        let t0 = Instant::now();
        assert!(gate.offer("a".into(), t0));
        assert!(
            !gate.offer("a".into(), t0 + Duration::from_secs(5)),
            "unchanged"
        );
        let t1 = t0 + Duration::from_secs(5);
        assert!(gate.offer("b".into(), t1));
        assert!(!gate.offer("c".into(), t1));
        assert!(!gate.offer("d".into(), t1 + Duration::from_millis(10)));
        assert_eq!(gate.deadline(), Some(t1 + WORKER_STATUS_EVERY));
        assert_eq!(gate.due(t1 + Duration::from_millis(500)), None);
        assert_eq!(gate.due(t1 + WORKER_STATUS_EVERY), Some("d".into()));
        assert_eq!(gate.deadline(), None);
    }

    #[test]
    fn a_held_back_status_equal_to_the_shown_one_is_forgotten() {
        let mut gate = StatusGate::default();
        let t0 = Instant::now();
        assert!(gate.offer("a".into(), t0));
        assert!(!gate.offer("b".into(), t0));
        assert!(!gate.offer("a".into(), t0));
        assert_eq!(gate.deadline(), None);
    }

    #[test]
    fn another_status_drops_the_held_back_line_and_lets_the_same_line_again() {
        let mut gate = StatusGate::default();
        let t0 = Instant::now();
        assert!(gate.offer("a".into(), t0));
        assert!(!gate.offer("b".into(), t0));
        gate.replaced();
        assert_eq!(gate.deadline(), None);
        assert!(gate.offer("a".into(), t0 + WORKER_STATUS_EVERY));
    }
}
