//! `--status-file` (its format is in `wire::status_file`): replaced atomically (write a
//! temporary file, then rename) so a reader never sees half of it, and without following a link
//! planted at either name (see [`guarded::replace`]).

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::server::files::guarded;
use crate::supervisor::Worker;
use crate::wire::status_file::{failure_path, format, format_failure};

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
        guarded::replace(
            &failure_path(&self.path),
            format_failure(generation, why).as_bytes(),
        )?;
        self.failure_written = true;
        Ok(())
    }

    /// Replaces the file's content with `workers`.
    pub fn write(&mut self, workers: &[Worker]) -> Result<()> {
        let pairs = workers.iter().map(|w| (w.generation, w.pid));
        guarded::replace(&self.path, format(pairs).as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status_file::read_failure;

    #[test]
    fn the_failure_note_is_written_and_removed_with_the_file() {
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
        status
            .write(&[Worker {
                generation: 3,
                pid: 9,
            }])
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3:9\n");
        drop(status);
        assert_eq!(read_failure(&path), None);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
