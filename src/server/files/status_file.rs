//! `--status-file` (its format is in `wire::status_file`): replaced atomically (write a
//! temporary file, then rename) so a reader never sees half of it, and without following a link
//! planted at either name (see `fs::guarded::replace`); at exit the file and its failure note
//! are removed if they are still the ones start_server wrote (`fs::owned`).

use std::path::Path;

use crate::error::Result;
use crate::fs::guarded;
use crate::fs::owned::Owned;
use crate::supervisor::Worker;
use crate::wire::status_file::{failure_path, format, format_failure};

/// The status file of this start_server and its failure note.
#[derive(Debug)]
pub struct StatusFile {
    status: Owned,
    failure: Owned,
}

impl StatusFile {
    /// A status file at `path`, not yet written; its directory must be safe.
    pub fn new(path: &Path) -> Result<StatusFile> {
        Ok(StatusFile {
            status: Owned::at(path, "--status-file")?,
            failure: Owned::at(&failure_path(path), "--status-file")?,
        })
    }

    /// Whether this process wrote the file and the failure file (and so removes them at exit),
    /// which an upgrade in place hands to the next image.
    pub fn written(&self) -> (bool, bool) {
        (self.status.is_made(), self.failure.is_made())
    }

    /// The status file as an earlier image left it (see [`StatusFile::written`]).
    pub fn adopt(path: &Path, (status, failure): (bool, bool)) -> Result<StatusFile> {
        let mut file = StatusFile::new(path)?;
        if status {
            file.status.made_current();
        }
        if failure {
            file.failure.made_current();
        }
        Ok(file)
    }

    /// Notes that `generation` failed to start, in `FILE.failed` (`GEN:why`), where
    /// `--restart` looks for the outcome of the restart it asked for.
    pub fn record_failure(&mut self, generation: u64, why: &str) -> Result<()> {
        let text = format_failure(generation, why);
        let meta = guarded::replace(self.failure.path(), text.as_bytes())?;
        self.failure.made(&meta);
        Ok(())
    }

    /// Replaces the file's content with `workers`.
    pub fn write(&mut self, workers: &[Worker]) -> Result<()> {
        let pairs = workers.iter().map(|w| (w.generation, w.pid));
        let meta = guarded::replace(self.status.path(), format(pairs).as_bytes())?;
        self.status.made(&meta);
        Ok(())
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        self.status.remove();
        self.failure.remove();
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
        let mut status = StatusFile::new(&path).unwrap();
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

    #[test]
    fn a_status_file_replaced_by_someone_else_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("status-file-other-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status");
        let mut status = StatusFile::new(&path).unwrap();
        status.write(&[]).unwrap();
        std::fs::write(dir.join("other"), "theirs\n").unwrap();
        std::fs::rename(dir.join("other"), &path).unwrap();
        drop(status);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
