//! Talking to a running start_server from the command line: `--restart` and `--stop`, through
//! its pid and status files.

pub mod client;
pub mod upgrade;
