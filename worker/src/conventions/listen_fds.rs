//! The systemd socket-passing convention: `LISTEN_FDS` sockets at fds 3, 4, ..., meant for the
//! process whose pid is `LISTEN_PID`, named in `LISTEN_FDNAMES` (`:`-separated).

use std::fmt;
use std::os::fd::RawFd;

/// The first passed fd (`SD_LISTEN_FDS_START`).
pub const START: RawFd = 3;

/// The most sockets a `LISTEN_FDS` can name: no process can have more fds open than the kernel's
/// default ceiling (`fs.nr_open`, 2^20), and a larger count must be refused before anything is
/// allocated for it.
const MAX_COUNT: usize = 1 << 20;

/// Why `LISTEN_*` variables could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// `LISTEN_FDS` is not a count of descriptors.
    BadCount(String),
    /// `LISTEN_PID` is not a pid.
    BadPid(String),
    /// `LISTEN_FDNAMES` does not have one name per descriptor.
    NamesMismatch {
        /// The number of descriptors in `LISTEN_FDS`.
        count: usize,
        /// The `LISTEN_FDNAMES` value.
        names: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadCount(v) => write!(f, "LISTEN_FDS={v:?} is not a number of sockets"),
            ParseError::BadPid(v) => write!(f, "LISTEN_PID={v:?} is not a process id"),
            ParseError::NamesMismatch { count, names } => write!(
                f,
                "LISTEN_FDNAMES={names:?} does not name each of the {count} sockets of LISTEN_FDS"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads the three variables as `sd_listen_fds_with_names` does: `None` when `LISTEN_FDS` or
/// `LISTEN_PID` is unset or `LISTEN_PID` is another process (the variables are not ours);
/// otherwise each fd with its name (`"unknown"` without `LISTEN_FDNAMES`).
pub fn parse(
    fds: Option<&str>,
    pid: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Option<Vec<(RawFd, String)>>, ParseError> {
    let (Some(fds), Some(pid)) = (fds, pid) else {
        return Ok(None);
    };
    let pid = number(pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| ParseError::BadPid(pid.to_string()))?;
    if pid != own_pid {
        return Ok(None);
    }
    let count = number(fds)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_COUNT)
        .ok_or_else(|| ParseError::BadCount(fds.to_string()))?;
    let names: Vec<String> = match names {
        Some(names) => {
            let split: Vec<String> = names.split(':').map(str::to_string).collect();
            if split.len() != count && !(count == 0 && names.is_empty()) {
                return Err(ParseError::NamesMismatch {
                    count,
                    names: names.to_string(),
                });
            }
            split
        }
        None => vec!["unknown".to_string(); count],
    };
    Ok(Some(
        (START..)
            .zip(names)
            .take(count)
            .collect::<Vec<(RawFd, String)>>(),
    ))
}

fn number(text: &str) -> Option<u64> {
    super::port_env::canonical_number(text)
        .then(|| text.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ours_and_ignores_others() {
        let got = parse(Some("2"), Some("42"), Some("web:admin"), 42).unwrap();
        assert_eq!(got, Some(vec![(3, "web".into()), (4, "admin".into())]));
        assert_eq!(parse(Some("2"), Some("41"), None, 42).unwrap(), None);
        assert_eq!(parse(Some("2"), None, None, 42).unwrap(), None);
        assert_eq!(parse(None, Some("42"), None, 42).unwrap(), None);
        let got = parse(Some("1"), Some("42"), None, 42).unwrap();
        assert_eq!(got, Some(vec![(3, "unknown".into())]));
        assert_eq!(
            parse(Some("0"), Some("42"), Some(""), 42).unwrap(),
            Some(vec![])
        );
    }

    #[test]
    fn rejects_malformed_values() {
        assert_eq!(
            parse(Some("abc"), Some("42"), None, 42),
            Err(ParseError::BadCount("abc".into()))
        );
        assert!(parse(Some("-1"), Some("42"), None, 42).is_err());
        assert!(parse(Some("99999999999"), Some("42"), None, 42).is_err());
        // Refused before a list that long is made (it once aborted on allocation).
        assert_eq!(
            parse(Some("2000000000"), Some("42"), None, 42),
            Err(ParseError::BadCount("2000000000".into()))
        );
        assert!(parse(Some("1"), Some("x"), None, 42).is_err());
        assert!(parse(Some("1"), Some("0"), None, 42).is_err());
        assert!(parse(Some("2"), Some("42"), Some("one"), 42).is_err());
    }

    #[test]
    fn property_accepted_values_are_exactly_what_they_say() {
        use super::super::port_env::tests::XorShift;
        let alphabet = [
            "1",
            "2",
            "0",
            "42",
            "-",
            "a",
            ":",
            "",
            " ",
            "99999999999999999999",
        ];
        let mut rng = XorShift(0x2545f4914f6cdd1d);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let fds = rng.text(&alphabet, 3);
            let pid = rng.text(&alphabet, 2);
            let names = rng.text(&alphabet, 4);
            let names = (rng.below(3) > 0).then_some(names.as_str());
            if let Ok(Some(listed)) = parse(Some(&fds), Some(&pid), names, 42) {
                accepted += 1;
                assert_eq!(pid, "42", "only our own pid is accepted");
                assert_eq!(fds.parse::<usize>().ok(), Some(listed.len()), "{fds:?}");
                assert!(fds.bytes().all(|b| b.is_ascii_digit()));
                for (i, (fd, name)) in listed.iter().enumerate() {
                    assert_eq!(*fd, START + i as RawFd);
                    assert!(!name.contains(':'));
                }
                if let Some(names) = names.filter(|_| !listed.is_empty()) {
                    let joined: Vec<&str> = listed.iter().map(|(_, n)| n.as_str()).collect();
                    assert_eq!(joined.join(":"), names);
                }
            }
        }
        assert!(accepted > 100, "valid input was generated too ({accepted})");
    }
}
