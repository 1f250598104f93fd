//! Looking at the workers from outside, through /proc and the kernel's socket tables: whether a
//! new generation waits for connections on the sockets it was passed ([`listening`], looked at
//! while a start is awaited by [`watch`]), what a
//! generation's processes cost ([`usage`]) and the connections they hold ([`connections`]).

// Not wired yet: usage and connections in status and metrics are being written.
#[allow(dead_code)]
pub mod connections;
pub mod listening;
#[allow(dead_code)]
pub mod usage;
pub mod watch;
