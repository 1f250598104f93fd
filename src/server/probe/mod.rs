//! Looking at the workers from outside, through /proc and the kernel's socket tables: whether a
//! new generation waits for connections on the sockets it was passed ([`listening`], looked at
//! while a start is awaited by [`watch`]), what a generation's processes cost ([`usage`]) and the
//! connections they hold ([`connections`]), both for every generation and worker at once
//! ([`costs`]), and when to measure the workers' memory ([`memory_watch`]).

pub mod connections;
pub mod costs;
pub mod listening;
pub mod memory_watch;
pub mod usage;
pub mod watch;
