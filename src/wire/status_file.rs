//! `--status-file`'s format: one `GEN:PID` line per live generation, sorted by generation; and
//! beside it `FILE.failed`, `GEN:why` for the last generation that failed to start, where
//! `--restart` reads the outcome of the restart it asked for.

use std::path::{Path, PathBuf};

use crate::vocab::Pid;

/// The file's text for these `(generation, pid)` pairs.
pub fn format(workers: impl IntoIterator<Item = (u64, Pid)>) -> String {
    let mut sorted: Vec<(u64, Pid)> = workers.into_iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(generation, pid)| format!("{generation}:{pid}\n"))
        .collect()
}

/// The distinct generations listed in a status file's text, ascending.
pub fn generations(text: &str) -> Vec<u64> {
    let mut gens: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(':')?.0.parse().ok())
        .collect();
    gens.sort_unstable();
    gens.dedup();
    gens
}

/// Where the last failed start is noted, beside the status file.
pub fn failure_path(status: &Path) -> PathBuf {
    let mut path = status.as_os_str().to_os_string();
    path.push(".failed");
    PathBuf::from(path)
}

/// The failure note's text.
pub fn format_failure(generation: u64, why: &str) -> String {
    format!("{generation}:{why}\n")
}

/// The last failed start noted beside the status file: its generation and why it failed;
/// `None` when there is none (or it cannot be read).
pub fn read_failure(status: &Path) -> Option<(u64, String)> {
    parse_failure(&std::fs::read_to_string(failure_path(status)).ok()?)
}

/// `GEN:why` as [`format_failure`] writes it.
pub fn parse_failure(text: &str) -> Option<(u64, String)> {
    let (generation, why) = text.trim_end().split_once(':')?;
    Some((generation.parse().ok()?, why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_numerically_by_generation() {
        let text = format([(10, 5), (9, 7)]);
        assert_eq!(text, "9:7\n10:5\n");
        assert_eq!(generations(&text), vec![9, 10]);
        assert_eq!(generations("junk\n3:1\n3:2\n"), vec![3]);
    }

    #[test]
    fn failure_lines_read_back_as_written() {
        let text = format_failure(7, "exec failed: a:b");
        assert_eq!(parse_failure(&text), Some((7, "exec failed: a:b".into())));
        assert_eq!(parse_failure("x:why\n"), None);
    }
}
