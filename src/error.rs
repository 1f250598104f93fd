//! One error type for the binary: a message meant for the operator, the exit status it maps to,
//! and, where an OS or library error caused it, that error as its source.

use std::fmt;

/// An error that ends start_server or a client command: printed as one line on stderr, then the
/// process exits with [`Error::exit_code`].
#[derive(Debug)]
pub struct Error {
    message: String,
    exit_code: i32,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result with the binary's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Bad command line or configuration: nothing was started (exit status 2, as for usage).
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: 2,
            source: None,
        }
    }

    /// Something the OS refused at run time (exit status 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: 1,
            source: None,
        }
    }

    /// The same error, caused by `source` (which the message already names).
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The exit status the process should end with.
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds what was being done to an OS error, turning it into a runtime [`Error`] caused by it.
pub trait Context<T> {
    /// `what` describes the failed operation, e.g. "failed to bind to 127.0.0.1:80".
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::runtime(format!("{}: {e}", what())).caused_by(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_message_names_the_cause_and_keeps_it() {
        let failed: std::result::Result<(), std::io::Error> =
            Err(std::io::ErrorKind::NotFound.into());
        let e = failed.context(|| "failed to open x".into()).unwrap_err();
        assert_eq!(e.to_string(), "failed to open x: entity not found");
        assert_eq!(e.exit_code(), 1);
        assert!(e.source().is_some());
    }
}
