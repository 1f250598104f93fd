//! `{PID_FILE}.upgrade`: the outcome of the last upgrade in place, for `--upgrade` without a
//! control socket. `OK <µs> <version>` from the new program once it runs, `FAILED <µs> <why>`
//! from the old one when it refused; the monotonic stamp makes each outcome differ from the one
//! before.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the new binary's `--upgrade-check` may take before the upgrade is given up (a
/// client waits that long, and the time to exec, for the outcome).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the outcome is written, beside the pid file.
pub fn path(pid_file: &Path) -> PathBuf {
    let mut path = pid_file.as_os_str().to_os_string();
    path.push(".upgrade");
    PathBuf::from(path)
}

/// The report's text for `outcome` (the version that runs, or why not) at `stamp`.
pub fn format(stamp: i64, outcome: &Result<String, String>) -> String {
    match outcome {
        Ok(version) => format!("OK {stamp} {version}\n"),
        Err(why) => format!("FAILED {stamp} {}\n", why.replace('\n', " ")),
    }
}

/// An outcome as [`format()`] wrote it: `Ok(version)` or `Err(why)`; `None` if there is none.
pub fn parse(text: &str) -> Option<Result<String, String>> {
    let line = text.lines().next()?;
    let mut parts = line.splitn(3, ' ');
    let (word, _stamp, rest) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    match word {
        "OK" => Some(Ok(rest.to_string())),
        "FAILED" => Some(Err(rest.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back() {
        assert_eq!(parse("OK 12 0.2.0\n"), Some(Ok("0.2.0".into())));
        assert_eq!(
            parse(&format(13, &Err("cannot run /x:\ngone".into()))),
            Some(Err("cannot run /x: gone".into()))
        );
        assert_eq!(parse(""), None);
        assert_eq!(
            path(Path::new("/run/a.pid")),
            PathBuf::from("/run/a.pid.upgrade")
        );
    }
}
