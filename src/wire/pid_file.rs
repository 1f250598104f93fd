//! `--pid-file`'s format: start_server's pid and a newline, in a file it holds an exclusive
//! `flock` on for its whole life.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::vocab::Pid;

/// Opens the pid file of a running start_server and reads its pid; the open file is returned
/// too, so that its lock can be checked and waited for.
pub fn read_pid(path: &Path) -> Result<(File, Pid)> {
    let shown = path.display();
    let mut file = match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::runtime(format!(
                "failed to open pid file {shown}: it does not exist: is start_server running \
                 with --pid-file={shown}?"
            )));
        }
        opened => opened.context(|| format!("failed to open pid file {shown}"))?,
    };
    let mut text = String::new();
    file.read_to_string(&mut text)
        .context(|| format!("failed to read pid file {shown}"))?;
    let pid = parse(&text).ok_or_else(|| {
        Error::runtime(format!(
            "pid file {shown} does not hold a pid (found {:?})",
            text.trim()
        ))
    })?;
    Ok((file, pid))
}

/// The pid on the file's first line.
pub fn parse(text: &str) -> Option<Pid> {
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<Pid>().ok())
        .filter(|p| *p > 0)
}

/// The file's text for `pid`.
pub fn format(pid: u32) -> String {
    format!("{pid}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_holds_the_pid() {
        assert_eq!(parse(&format(42)), Some(42));
        assert_eq!(parse(" 7 \nrest"), Some(7));
        assert_eq!(parse("0\n"), None);
        assert_eq!(parse("-1\n"), None);
        assert_eq!(parse(""), None);
    }
}
