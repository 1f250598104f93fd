//! One error type for the binary: a message meant for the operator and the exit status it maps to.

use std::fmt;

/// An error that ends start_server: printed as one line on stderr, then the process exits with
/// [`Error::exit_code`].
#[derive(Debug)]
pub struct Error {
    message: String,
    exit_code: i32,
}

/// Result with the binary's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Bad command line or configuration: nothing was started (exit status 2, as for usage).
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: 2,
        }
    }

    /// Something the OS refused at run time (exit status 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            exit_code: 1,
        }
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

/// Adds what was being done to an OS error, turning it into a runtime [`Error`].
pub trait Context<T> {
    /// `what` describes the failed operation, e.g. "failed to bind to 127.0.0.1:80".
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::runtime(format!("{}: {e}", what())))
    }
}
