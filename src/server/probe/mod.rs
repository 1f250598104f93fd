//! Looking at the workers from outside, through /proc and the kernel's socket tables: whether a
//! new generation waits for connections on the sockets it was passed ([`listening`]), what a
//! generation's processes cost ([`usage`]) and the connections they hold ([`connections`]).

pub mod connections;
pub mod listening;
pub mod usage;
