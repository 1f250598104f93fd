//! What start_server writes for its workers in the two conventions the worker library reads:
//! `SERVER_STARTER_PORT` values and `LISTEN_FDNAMES` names. Only start_server writes them, so
//! they live here rather than in the library.

use std::os::fd::RawFd;

/// Where `LISTEN_FDS` sockets start (systemd's `SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = server_starter_worker::conventions::LISTEN_FDS_START;

/// Writes `(key, fd)` entries in the `SERVER_STARTER_PORT` format, in the order given.
pub fn port_env_value<'a>(entries: impl IntoIterator<Item = (&'a str, RawFd)>) -> String {
    entries
        .into_iter()
        .map(|(key, fd)| format!("{key}={fd}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// A name usable in `LISTEN_FDNAMES` for a socket described by `key`: `:` (the separator) and
/// anything but printable ASCII become `_`, at most 255 characters (systemd's limits).
pub fn fdname_for(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ':' {
                c
            } else {
                '_'
            }
        })
        .take(255)
        .collect()
}

/// What starts the name of every socket start_server keeps in systemd's file descriptor store,
/// so that the sockets of a socket unit (named after it or its `FileDescriptorName=`) are never
/// taken for ours.
pub const STORE_PREFIX: &str = "start_server.";

/// The name under which the socket of `--port`/`--path` `key` is kept in systemd's file
/// descriptor store: the prefix, the kind (`tcp`, `udp`, `unix`: a key does not say it) and the
/// key, fit for `FDNAME=`. The address is checked too when a socket comes back, so two keys
/// that map to one name cannot be confused.
pub fn store_name(kind: &str, key: &str) -> String {
    fdname_for(&format!("{STORE_PREFIX}{kind}.{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use server_starter_worker::conventions::{PortEntry, parse_port_env};

    fn entry(key: &str, fd: RawFd) -> PortEntry {
        PortEntry {
            key: key.into(),
            fd,
        }
    }

    #[test]
    fn round_trips_every_key_form() {
        let entries = vec![
            entry("8080", 3),
            entry("127.0.0.1:8081", 4),
            entry("[::1]:8082", 5),
            entry("/run/app.sock", 6),
            entry("localhost:53", 0),
        ];
        let text = port_env_value(entries.iter().map(|e| (e.key.as_str(), e.fd)));
        assert_eq!(
            text,
            "8080=3;127.0.0.1:8081=4;[::1]:8082=5;/run/app.sock=6;localhost:53=0"
        );
        assert_eq!(parse_port_env(&text).unwrap(), entries);
    }

    #[test]
    fn names_never_contain_the_separator() {
        assert_eq!(fdname_for("127.0.0.1:8080"), "127.0.0.1_8080");
        assert_eq!(fdname_for("[::1]:80"), "[__1]_80");
        assert_eq!(fdname_for("/run/app.sock"), "/run/app.sock");
        assert_eq!(fdname_for("/tmp/é x").len(), 8);
    }

    #[test]
    fn store_names_say_kind_and_key_within_systemds_limits() {
        assert_eq!(
            store_name("tcp", "127.0.0.1:8080"),
            "start_server.tcp.127.0.0.1_8080"
        );
        assert_eq!(
            store_name("unix", "/run/a.sock"),
            "start_server.unix./run/a.sock"
        );
        let long = store_name("unix", &"/x".repeat(300));
        assert_eq!(long.len(), 255);
        assert!(long.starts_with(STORE_PREFIX));
    }
}
