//! Talking to a running start_server from the command line: `--stop` and `--restart` through
//! its pid and status files ([`process`], believing a pid file only on [`evidence`]); `--status`, `--reload` and `--check` through its
//! control socket ([`control`], summary by [`render`]); `--upgrade` through either ([`upgrade`]).
//! The formats come from `wire`; nothing here imports the server.

pub mod ask;
pub mod control;
pub mod evidence;
pub mod process;
pub mod render;
pub mod upgrade;
pub mod usage;

use std::io::Write;

/// Writes one line to stderr; a line that cannot be written is dropped (a client's output is
/// never worth a panic).
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
