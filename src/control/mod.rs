//! Talking to a running start_server from the command line: `--restart` and `--stop`, through
//! its pid and status files; `--status`, `--reload` and `--check` through its control socket,
//! whose protocol is shared with the server side.

pub mod client;
pub mod operator;
pub mod protocol;
pub mod upgrade;
