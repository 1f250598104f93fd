//! Worker side of server-starter: what a server program running under `start_server` uses to
//! find the sockets it inherited.
//!
//! `start_server` binds the listening sockets and passes them to its worker at fixed fd numbers,
//! described in `SERVER_STARTER_PORT` as `;`-separated `KEY=FD` entries (`8080=3`,
//! `127.0.0.1:8080=4`, `[::1]:8080=5`, `/run/app.sock=6`). [`port_env`] reads and writes that
//! format. This crate builds with `default-features = false` for workers: then it depends on
//! nothing but `libc`.

pub mod port_env;
