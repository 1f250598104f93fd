//! The counts the server keeps besides the supervisor's (which hands its own over): upgrades in
//! place by outcome, and what the images before this one counted of the log lines dropped and
//! the notifications rejected (each image counts its own from zero). Handed over in an upgrade.

use serde::{Deserialize, Serialize};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Upgrades in place that ran the new program.
    pub upgrades_ok: u64,
    /// Upgrades refused before the exec (the old program runs on).
    pub upgrades_refused: u64,
    /// Upgrades whose new program could not take over (the old one runs again).
    pub upgrades_rolled_back: u64,
    /// Log lines the images before this one dropped.
    pub log_lines_dropped_before: u64,
    /// Notifications the images before this one rejected.
    pub notify_rejected_before: u64,
}

impl Counters {
    /// Log lines dropped since start-up, this image's `now` included.
    pub fn log_lines_dropped(&self, now: u64) -> u64 {
        self.log_lines_dropped_before + now
    }

    /// Notifications rejected since start-up, this image's `now` included.
    pub fn notify_rejected(&self, now: u64) -> u64 {
        self.notify_rejected_before + now
    }

    /// For the next image: this image's counts added to those before it.
    pub fn export(&self, log_lines_dropped: u64, notify_rejected: u64) -> Counters {
        Counters {
            log_lines_dropped_before: self.log_lines_dropped(log_lines_dropped),
            notify_rejected_before: self.notify_rejected(notify_rejected),
            ..*self
        }
    }
}
