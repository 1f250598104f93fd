//! Signal names as operators write them (`--signal-on-hup=USR1`) and as the log shows them.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal name or number that names no signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSignal(pub String);

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown signal {:?}: use a name such as TERM, QUIT, INT, USR1, USR2, HUP (with or \
             without SIG) or a number",
            self.0
        )
    }
}

impl std::error::Error for UnknownSignal {}

/// Parses `TERM`, `SIGTERM`, `term` or `15` (the original accepts names with or without `SIG`,
/// in any case).
pub fn parse(text: &str) -> Result<Signal, UnknownSignal> {
    let trimmed = text.trim();
    let by_number = trimmed
        .parse::<i32>()
        .ok()
        .and_then(|n| Signal::try_from(n).ok());
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    by_number
        .or_else(|| Signal::from_str(&format!("SIG{name}")).ok())
        .ok_or_else(|| UnknownSignal(text.to_string()))
}

/// Name without the `SIG` prefix, as the original prints it (`TERM`).
pub fn short_name(signal: Signal) -> &'static str {
    let name = signal.as_str();
    name.strip_prefix("SIG").unwrap_or(name)
}

/// `PWR` or `RTMIN+3`, for the log.
pub fn number_name(number: i32) -> String {
    match Signal::try_from(number) {
        Ok(signal) => short_name(signal).to_string(),
        Err(_) if number >= libc::SIGRTMIN() => format!("RTMIN+{}", number - libc::SIGRTMIN()),
        Err(_) => number.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_in_every_spelling() {
        for text in [
            "TERM", "SIGTERM", "term", "sigterm", "SigTerm", "15", " TERM ",
        ] {
            assert_eq!(parse(text).unwrap(), Signal::SIGTERM, "{text}");
        }
        assert_eq!(parse("usr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(short_name(Signal::SIGQUIT), "QUIT");
    }

    #[test]
    fn unused_signals_are_named_for_the_log() {
        assert_eq!(number_name(libc::SIGPWR), "PWR");
        assert_eq!(number_name(libc::SIGRTMIN() + 2), "RTMIN+2");
    }

    #[test]
    fn rejects_unknown_names() {
        for text in ["", "FOO", "SIG", "999", "-1", "TERM2"] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("unknown signal"), "{err}");
        }
    }
}
