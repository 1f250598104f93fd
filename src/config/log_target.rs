//! `--log-file`'s value: a file to append to, or `| COMMAND` to pipe into.

use std::path::PathBuf;

/// Where start_server's and the workers' output goes (see `server::log::output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Append to this file.
    File(PathBuf),
    /// Feed this shell command's standard input.
    Command(String),
}

impl LogTarget {
    /// Reads the option's value the way the original does: a leading `|` means a command.
    pub fn parse(value: &str) -> LogTarget {
        match value.trim_start().strip_prefix('|') {
            Some(command) => LogTarget::Command(command.trim_start().to_string()),
            None => LogTarget::File(PathBuf::from(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_or_file() {
        assert_eq!(
            LogTarget::parse(" | logger -t app"),
            LogTarget::Command("logger -t app".into())
        );
        assert_eq!(
            LogTarget::parse("/var/log/app.log"),
            LogTarget::File("/var/log/app.log".into())
        );
    }
}
