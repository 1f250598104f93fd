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
    MissingFd {
        /// The entry, as found between two `;`.
        entry: String,
    },
    /// An entry's key is empty.
    EmptyKey {
        /// The entry, as found between two `;`.
        entry: String,
    },
    /// The part after the entry's first `=` is not an fd number written as a program writes
    /// it (digits only, no sign, no leading zero).
    BadFd {
        /// The entry, as found between two `;`.
        entry: String,
    },
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
            let fd = canonical_number(fd)
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

/// A decimal number as a program writes it: digits only, no leading zero (but "0"), so that
/// every accepted value reads back the same.
pub(crate) fn canonical_number(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn entry(key: &str, fd: RawFd) -> PortEntry {
        PortEntry {
            key: key.into(),
            fd,
        }
    }

    /// A small deterministic generator, so that the property tests need no extra crate.
    pub(crate) struct XorShift(pub u64);

    impl XorShift {
        pub(crate) fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        pub(crate) fn text(&mut self, alphabet: &[&str], max: usize) -> String {
            let len = self.below(max + 1);
            (0..len)
                .map(|_| alphabet[self.below(alphabet.len())])
                .collect()
        }
    }

    #[test]
    fn property_accepted_input_is_exactly_what_it_says() {
        let alphabet = [
            "8",
            "0",
            "1",
            "=",
            ";",
            ":",
            "[",
            "]",
            "/",
            "a",
            "u",
            " ",
            "-",
            "+",
            ".",
            "é",
            "\0",
            "99999999999",
        ];
        let mut rng = XorShift(0x9e3779b97f4a7c15);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let input = rng.text(&alphabet, 12);
            // Never panics; anything accepted reproduces every non-empty entry exactly, so no
            // part of the input was dropped or guessed at.
            if let Ok(entries) = parse(&input) {
                accepted += 1;
                let segments: Vec<&str> = input.split(';').filter(|s| !s.is_empty()).collect();
                assert_eq!(segments.len(), entries.len(), "{input:?}");
                for (segment, entry) in segments.iter().zip(&entries) {
                    assert_eq!(*segment, format!("{}={}", entry.key, entry.fd), "{input:?}");
                    assert!(!entry.key.is_empty() && entry.fd >= 0);
                }
            }
        }
        assert!(
            accepted > 1000,
            "the generator also makes valid input ({accepted})"
        );
    }

    #[test]
    fn rejects_malformed_entries() {
        assert!(matches!(parse("8080"), Err(ParseError::MissingFd { .. })));
        assert!(matches!(parse("=3"), Err(ParseError::EmptyKey { .. })));
        assert!(matches!(parse("8080=x"), Err(ParseError::BadFd { .. })));
        assert!(matches!(parse("8080=-1"), Err(ParseError::BadFd { .. })));
        assert!(matches!(parse("8080=+3"), Err(ParseError::BadFd { .. })));
        assert!(matches!(parse("8080=03"), Err(ParseError::BadFd { .. })));
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(
            parse("a=3;;b=4;").unwrap(),
            vec![entry("a", 3), entry("b", 4)]
        );
    }
}
