//! `--upgrade-check`: before start_server executes a new binary, that binary is run with the same
//! options and this flag; it must accept the options, and say its version and the state formats
//! it reads ([`report`]).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::image::Image;
use super::refusal::Refusal;
use super::state::{FORMAT, READS};
use super::version::version;
use crate::wire::upgrade_report::CHECK_TIMEOUT;

/// What this binary says when checked: its version, then the formats it reads.
pub fn report() -> String {
    let formats: Vec<String> = READS.iter().map(u32::to_string).collect();
    format!(
        "start_server {}\nupgrade-state-formats: {}\n",
        version(),
        formats.join(" ")
    )
}

/// Runs `binary --upgrade-check ARGS...` (bounded by [`CHECK_TIMEOUT`]): the binary must exit 0
/// and read this image's state format. Returns its version.
pub fn check(image: &Image) -> Result<String, Refusal> {
    let binary = || image.binary.clone();
    let mut child = Command::new(&image.binary)
        .arg("--upgrade-check")
        .args(image.argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Refusal::CannotRun {
            binary: binary(),
            error,
        })?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Refusal::CheckTimedOut {
                    binary: binary(),
                    limit: CHECK_TIMEOUT,
                });
            }
            Err(error) => {
                return Err(Refusal::CannotWait {
                    binary: binary(),
                    error,
                });
            }
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if !status.success() {
        let said = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Refusal::CheckFailed {
            binary: binary(),
            status,
            said: said.to_string(),
        });
    }
    let reads: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("upgrade-state-formats:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if !reads.contains(&FORMAT) {
        return Err(Refusal::FormatNotRead {
            binary: binary(),
            format: FORMAT,
            reads,
        });
    }
    Ok(stdout
        .lines()
        .find_map(|l| l.strip_prefix("start_server "))
        .unwrap_or("(unknown version)")
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_the_version_and_the_formats_read() {
        assert!(report().starts_with(&format!("start_server {}\n", version())));
        assert!(report().ends_with("\nupgrade-state-formats: 1 2 3\n"));
    }
}
