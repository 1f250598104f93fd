//! Worker side of server-starter: what a server program running under `start_server` (or
//! systemd socket activation) uses to find the sockets it inherited.
//!
//! `start_server` passes its listening sockets to the worker and describes them twice:
//! in `SERVER_STARTER_PORT` as `;`-separated `KEY=FD` entries (`8080=3`, `127.0.0.1:8080=4`,
//! `[::1]:8080=5`, `/run/app.sock=6`), read by [`port_env`], and in systemd's `LISTEN_FDS`,
//! `LISTEN_PID`, `LISTEN_FDNAMES`, read by [`listen_fds`]. [`listeners::Listeners`] turns either
//! into `std` listeners, checking each fd. [`ready::notify`] sends `READY=1` to start_server
//! (or systemd) once the worker serves.
//!
//! The library builds with `default-features = false` and then depends on `libc` only; the
//! other modules in `src/` belong to the `start_server` binary.

pub mod listen_fds;
pub mod listeners;
pub mod port_env;
pub mod ready;
