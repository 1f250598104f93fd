//! Looking at the workers from outside, through /proc: whether a new generation waits for
//! connections on the sockets it was passed ([`listening`]).

pub mod listening;
