//! `--worker-max-memory`'s cadence: every [`EVERY`], an [`Event::MemoryCheck`], for the loop to
//! measure the serving workers and tell the supervisor of those past the limit. Only with the
//! option: without it nothing wakes start_server while idle.

use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use crate::error::Result;
use crate::server::event::{Event, Source};

/// How often the workers' memory is measured.
pub const EVERY: Duration = Duration::from_secs(5);

/// The limit, and when it is checked next.
#[derive(Debug)]
pub struct MemoryWatch {
    /// `--worker-max-memory`, bytes.
    pub limit: u64,
    next: Instant,
}

impl MemoryWatch {
    /// Checks every [`EVERY`] from `now`.
    pub fn new(limit: u64, now: Instant) -> MemoryWatch {
        MemoryWatch {
            limit,
            next: now + EVERY,
        }
    }
}

impl Source for MemoryWatch {
    fn deadline(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn on_ready(&mut self, _: &[PollFlags], now: Instant, events: &mut Vec<Event>) -> Result<()> {
        if now >= self.next {
            self.next = now + EVERY;
            events.push(Event::MemoryCheck);
        }
        Ok(())
    }
}
