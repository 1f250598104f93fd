//! Worker side of server-starter: what a server program running under `start_server` (or
//! systemd socket activation) uses to find the sockets it inherited.
//!
//! `start_server` passes its listening sockets to the worker and describes them twice:
//! in `SERVER_STARTER_PORT` as `;`-separated `KEY=FD` entries (`8080=3`, `127.0.0.1:8080=4`,
//! `[::1]:8080=5`, `/run/app.sock=6`), read by [`conventions::parse_port_env`], and in systemd's
//! `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`, read by [`conventions::parse_listen_fds`]. [`Listeners`] turns either into
//! `std` listeners, checking each fd ([`socket_kind`] tells what an fd is without taking it).
//! [`ready::notify`] sends `READY=1` to start_server (or systemd) once the worker serves.
//!
//! Linux only: it asks the kernel for `SO_DOMAIN` and reaches notify sockets in the abstract
//! namespace (`@name`), both Linux features, as start_server itself is. It depends on `libc`
//! alone.
//!
//! The crate's README follows; its example is compiled as a doctest, so it stays true.
//!
#![doc = include_str!("../README.md")]

pub mod conventions;
pub mod listeners;
pub mod ready;

pub use listeners::{Error, Listeners, SocketKind, socket_kind};
