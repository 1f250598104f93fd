//! `--status-file`: one `GEN:PID` line per live generation, sorted by generation, replaced
//! atomically (write a temporary file, then rename) so a reader never sees half of it, and
//! without following a link planted at either name (see [`files::replace`]).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::runtime::files;
use crate::supervisor::Worker;

/// The status file of this start_server; removed on drop if this process wrote it.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    created: bool,
    failure_written: bool,
}

impl StatusFile {
    /// A status file at `path`, not yet written.
    pub fn new(path: &Path) -> StatusFile {
        StatusFile {
            path: path.to_path_buf(),
            created: false,
            failure_written: false,
        }
    }

    /// Whether this process wrote the file and the failure file (and so removes them at exit),
    /// which an upgrade in place hands to the next image.
    pub fn written(&self) -> (bool, bool) {
        (self.created, self.failure_written)
    }

    /// The status file as an earlier image left it (see [`StatusFile::written`]).
    pub fn adopt(path: &Path, (created, failure_written): (bool, bool)) -> StatusFile {
        StatusFile {
            path: path.to_path_buf(),
            created,
            failure_written,
        }
    }

    /// Notes that `generation` failed to start, in `FILE.failed` (`GEN:why`), where
    /// `--restart` looks for the outcome of the restart it asked for.
    pub fn record_failure(&mut self, generation: u64, why: &str) -> Result<()> {
        files::replace(
            &failure_path(&self.path),
            format!("{generation}:{why}\n").as_bytes(),
        )?;
        self.failure_written = true;
        Ok(())
    }

    /// Replaces the file's content with `workers`.
    pub fn write(&mut self, workers: &[Worker]) -> Result<()> {
        files::replace(&self.path, format(workers).as_bytes())?;
        self.created = true;
        Ok(())
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
        if self.failure_written {
            let _ = std::fs::remove_file(failure_path(&self.path));
        }
    }
}

/// Where the last failed start is noted, beside the status file.
pub fn failure_path(status: &Path) -> PathBuf {
    let mut path = status.as_os_str().to_os_string();
    path.push(".failed");
    PathBuf::from(path)
}

/// The last failed start noted beside the status file (see [`StatusFile::record_failure`]):
/// its generation and why it failed; `None` when there is none (or it cannot be read).
pub fn read_failure(status: &Path) -> Option<(u64, String)> {
    parse_failure(&std::fs::read_to_string(failure_path(status)).ok()?)
}

/// `GEN:why` as [`StatusFile::record_failure`] writes it.
fn parse_failure(text: &str) -> Option<(u64, String)> {
    let (generation, why) = text.trim_end().split_once(':')?;
    Some((generation.parse().ok()?, why.to_string()))
}

/// The file's text for these workers.
pub fn format(workers: &[Worker]) -> String {
    let mut sorted = workers.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|w| format!("{}:{}\n", w.generation, w.pid))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_numerically_by_generation() {
        let text = format(&[
            Worker {
                generation: 10,
                pid: 5,
            },
            Worker {
                generation: 9,
                pid: 7,
            },
        ]);
        assert_eq!(text, "9:7\n10:5\n");
        assert_eq!(generations(&text), vec![9, 10]);
        assert_eq!(generations("junk\n3:1\n3:2\n"), vec![3]);
    }

    #[test]
    fn failure_lines_read_back_as_written() {
        let dir = std::env::temp_dir().join(format!("status-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status");
        let mut status = StatusFile::new(&path);
        assert_eq!(read_failure(&path), None);
        status.record_failure(7, "exec failed: a:b").unwrap();
        assert_eq!(
            read_failure(&path),
            Some((7, "exec failed: a:b".to_string()))
        );
        drop(status);
        assert_eq!(read_failure(&path), None);
        assert_eq!(parse_failure("x:why\n"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
