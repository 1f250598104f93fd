//! `--ready=listening` in the event loop: a timer [`Source`] that looks, while some worker's
//! start is awaited, whether it (or a process it started) waits for connections on one of the
//! sockets start_server passed ([`listening::find`]), and tells the supervisor
//! ([`Event::Listening`]). With nothing awaited it has no deadline: it costs nothing while idle.
//!
//! Each awaited worker is looked at on its own cadence: first [`FIRST_LOOK`] after it is
//! awaited (about its spawn), then each wait 1.5 times the last up to [`LONGEST_WAIT`], and never
//! less than [`COST_FACTOR`] times what its last look took (a generation of many processes is
//! looked at less often, so that looking stays under 5% of a CPU). A server is seen within
//! milliseconds of waiting; `docs/BENCHMARKS.md` has the figures.

use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::listening::{self, Inodes};
use crate::error::Result;
use crate::server::event::{Event, Source};
use crate::vocab::Pid;

/// The first look at a worker, after it is awaited: servers take a few milliseconds at least
/// to reach their accept.
pub const FIRST_LOOK: Duration = Duration::from_millis(5);

/// The longest wait between two looks at a worker (a server is seen at most this late).
pub const LONGEST_WAIT: Duration = Duration::from_millis(20);

/// The least wait between two looks, in multiples of what the last look took.
pub const COST_FACTOR: u32 = 20;

/// How much longer each wait is than the one before, until [`LONGEST_WAIT`].
const GROWTH: f64 = 1.5;

/// The workers whose start is awaited, and the sockets they are looked at for.
#[derive(Debug, Default)]
pub struct ListeningWatch {
    /// The passed sockets' inodes: read once, at the first worker awaited.
    sockets: Option<Inodes>,
    awaited: Vec<Awaited>,
}

/// One awaited worker.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    pid: Pid,
    /// When it is looked at next.
    next: Instant,
    /// The wait before that look.
    wait: Duration,
    /// Seen listening (and told): not looked at again.
    seen: bool,
}

impl ListeningWatch {
    /// No worker awaited yet.
    pub fn new() -> ListeningWatch {
        ListeningWatch::default()
    }

    /// The workers awaited now (the supervisor's `awaiting_listening`); those new to the list
    /// are first looked at [`FIRST_LOOK`] after `now`. `sockets` gives the passed sockets'
    /// inodes, asked for once.
    pub fn track(&mut self, pids: &[Pid], sockets: impl FnOnce() -> Inodes, now: Instant) {
        self.awaited.retain(|a| pids.contains(&a.pid));
        for &pid in pids {
            if !self.awaited.iter().any(|a| a.pid == pid) {
                self.awaited.push(Awaited {
                    pid,
                    next: now + FIRST_LOOK,
                    wait: FIRST_LOOK,
                    seen: false,
                });
            }
        }
        if !self.awaited.is_empty() && self.sockets.is_none() {
            self.sockets = Some(sockets());
        }
    }

    /// Looks at each worker whose time has come; those found listening become events.
    fn look(&mut self, now: Instant, events: &mut Vec<Event>) {
        let Some(sockets) = &self.sockets else {
            return;
        };
        for awaited in self.awaited.iter_mut().filter(|a| !a.seen && now >= a.next) {
            let began = Instant::now();
            let found = listening::find(&[awaited.pid], sockets);
            let took = began.elapsed();
            match found {
                Some(how) => {
                    awaited.seen = true;
                    events.push(Event::Listening {
                        worker: awaited.pid,
                        how: how.to_string(),
                    });
                }
                None => {
                    awaited.wait = awaited
                        .wait
                        .mul_f64(GROWTH)
                        .min(LONGEST_WAIT)
                        .max(took * COST_FACTOR);
                    awaited.next = Instant::now() + awaited.wait;
                }
            }
        }
    }
}

impl Source for ListeningWatch {
    fn deadline(&self) -> Option<Instant> {
        self.sockets.as_ref()?;
        self.awaited
            .iter()
            .filter(|a| !a.seen)
            .map(|a| a.next)
            .min()
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, events: &mut Vec<Event>) -> Result<()> {
        self.look(now, events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn inode_of(listener: &TcpListener) -> u64 {
        nix::sys::stat::fstat(listener).unwrap().st_ino
    }

    #[test]
    fn idle_it_has_no_deadline_and_asks_for_no_sockets() {
        let mut watch = ListeningWatch::new();
        watch.track(&[], || panic!("no socket is needed"), Instant::now());
        assert_eq!(watch.deadline(), None);
    }

    #[test]
    fn a_worker_is_looked_at_ever_less_often_until_seen_listening() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let passed = Inodes::from([inode_of(&listener)]);
        // A worker that waits a while, then accepts on the socket it was given at fd 3 (as
        // start_server gives it).
        let fd = listener.as_raw_fd();
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "sleep 0.3; exec /usr/bin/python3 -c \"import socket; socket.socket(fileno=3).accept()\""])
            .stdin(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2).
        unsafe {
            command.pre_exec(move || {
                let placed = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if placed < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id() as Pid;
        let mut watch = ListeningWatch::new();
        let start = Instant::now();
        watch.track(&[pid], || passed.clone(), start);
        assert_eq!(watch.deadline(), Some(start + FIRST_LOOK));
        let mut waits = Vec::new();
        let mut events = Vec::new();
        while events.is_empty() && start.elapsed() < Duration::from_secs(30) {
            let due = watch.deadline().expect("awaited");
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            watch.on_ready(&[], Instant::now(), &mut events).unwrap();
            waits.push(watch.awaited[0].wait);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            matches!(&events[..], [Event::Listening { worker, how }] if *worker == pid && how.contains("accept")),
            "{events:?}"
        );
        assert_eq!(watch.deadline(), None, "seen: not looked at again");
        // 5 ms, then 7.5, 11.25, 16.9, then 20 ms (or 20 times a look, if that is longer).
        assert!(waits.len() >= 2, "{waits:?}");
        let mut least = FIRST_LOOK;
        for wait in &waits[..waits.len() - 1] {
            least = least.mul_f64(GROWTH).min(LONGEST_WAIT);
            assert!(*wait >= least, "{waits:?}");
        }
        watch.track(&[], || unreachable!(), Instant::now());
        assert!(watch.awaited.is_empty(), "no longer awaited: forgotten");
    }
}
