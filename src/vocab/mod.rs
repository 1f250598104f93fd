//! The words every room of start_server shares: durations as operators read them and as an
//! upgrade hands them over ([`time`]), process ids and exit statuses ([`process`]), counts of observations ([`histogram`]), signal names
//! ([`signal`]), outside text made safe to print ([`text`]), who could have made a path ([`trust`]). This module imports nothing of the crate: the pure supervisor stands on it alone,
//! and no room has to reach upwards for a word.

pub mod histogram;
pub mod process;
pub mod signal;
pub mod text;
pub mod time;
pub mod trust;

pub use process::{ExitStatus, Pid};
pub use time::Secs;
