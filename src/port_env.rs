//! The `SERVER_STARTER_PORT` format: `;`-separated `KEY=FD` entries.
//!
//! KEY is the address as the operator wrote it (`8080`, `127.0.0.1:8080`, `[::1]:8080`) or a unix
//! socket path; FD is the descriptor number the socket sits at in the worker. Clients in other
//! languages split on `;` and then on the first `=`, so a key must contain neither `;` nor `=`.

use std::fmt;
use std::os::fd::RawFd;

/// Name of the environment variable that lists the inherited sockets.
pub const VAR: &str = "SERVER_STARTER_PORT";

/// One socket handed to the worker: its address as configured and the fd it sits at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    /// The address as written on start_server's command line, or the unix socket path.
    pub key: String,
    /// The descriptor number of the socket in the worker.
    pub fd: RawFd,
}

/// Why a `SERVER_STARTER_PORT` value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// An entry has no `=` between its key and its fd.
    MissingFd { entry: String },
    /// An entry's key is empty.
    EmptyKey { entry: String },
    /// The part after the last `=` is not a non-negative fd number.
    BadFd { entry: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingFd { entry } => {
                write!(f, "{VAR} entry {entry:?} has no '=FD' part")
            }
            ParseError::EmptyKey { entry } => write!(f, "{VAR} entry {entry:?} has an empty key"),
            ParseError::BadFd { entry } => {
                write!(
                    f,
                    "{VAR} entry {entry:?} does not end in a file descriptor number"
                )
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads a `SERVER_STARTER_PORT` value. Empty entries (as in `a=3;;b=4` or a trailing `;`) are
/// skipped, as every known client does.
pub fn parse(value: &str) -> Result<Vec<PortEntry>, ParseError> {
    value
        .split(';')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (key, fd) = entry.split_once('=').ok_or_else(|| ParseError::MissingFd {
                entry: entry.to_string(),
            })?;
            if key.is_empty() {
                return Err(ParseError::EmptyKey {
                    entry: entry.to_string(),
                });
            }
            let fd = fd
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| fd.parse::<RawFd>().ok())
                .flatten()
                .ok_or_else(|| ParseError::BadFd {
                    entry: entry.to_string(),
                })?;
            Ok(PortEntry {
                key: key.to_string(),
                fd,
            })
        })
        .collect()
}

/// Writes entries in the `SERVER_STARTER_PORT` format, in the order given.
pub fn format(entries: &[PortEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}={}", e.key, e.fd))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = format(&entries);
        assert_eq!(
            text,
            "8080=3;127.0.0.1:8081=4;[::1]:8082=5;/run/app.sock=6;localhost:53=0"
        );
        assert_eq!(parse(&text).unwrap(), entries);
    }

    #[test]
    fn rejects_malformed_entries() {
        assert!(matches!(parse("8080"), Err(ParseError::MissingFd { .. })));
        assert!(matches!(parse("=3"), Err(ParseError::EmptyKey { .. })));
        assert!(matches!(parse("8080=x"), Err(ParseError::BadFd { .. })));
        assert!(matches!(parse("8080=-1"), Err(ParseError::BadFd { .. })));
        assert!(matches!(parse("8080=+3"), Err(ParseError::BadFd { .. })));
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            parse("a=3;;b=4;").unwrap(),
            vec![entry("a", 3), entry("b", 4)]
        );
    }
}
