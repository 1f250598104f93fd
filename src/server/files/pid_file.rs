//! `--pid-file`: start_server's pid, under an exclusive `flock` held for its whole life, so that
//! `--stop` can wait for it to exit by taking the lock, and a second start_server on the same
//! file is refused instead of overwriting the first one's pid.
//!
//! A file already there is used only if root or start_server's own user made it (another user's
//! file could name any pid); start_server removes at exit only the file it created or wrote its
//! pid into, and only if the path still leads to it (`fs::owned`): a start that fails leaves a
//! file that was there before alone.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Error, Result};
use crate::fs::guarded;
use crate::fs::owned::Owned;
use crate::vocab::trust;

/// A locked pid file, removed when dropped if it is start_server's.
#[derive(Debug)]
pub struct PidFile {
    owned: Owned,
    file: Flock<File>,
}

impl PidFile {
    /// Opens (or creates) and locks the file. Fails at once if another process holds the lock,
    /// or if the file or its directory is another user's.
    pub fn lock(path: &Path) -> Result<PidFile> {
        let shown = path.display();
        let mut owned = Owned::at(path, "--pid-file")?;
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        let file = match created {
            Ok(file) => {
                let meta = file
                    .metadata()
                    .context(|| format!("failed to inspect pid file {shown}"))?;
                owned.made(&meta);
                file
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Opened in place (the lock is on this file), never through a planted link.
                let file = guarded::open_guarded(
                    OpenOptions::new().read(true).write(true),
                    path,
                    "pid file",
                )?;
                let meta = file
                    .metadata()
                    .context(|| format!("failed to inspect pid file {shown}"))?;
                if !trust::trusted_uid(meta.uid()) {
                    return Err(Error::runtime(format!(
                        "pid file {shown} belongs to uid {}, not to root or start_server's user: \
                         another user could have written any pid in it; remove it or use \
                         another --pid-file",
                        meta.uid()
                    )));
                }
                file
            }
            Err(e) => {
                return Err(
                    Error::runtime(format!("failed to open pid file {shown}: {e}")).caused_by(e),
                );
            }
        };
        let file =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(mut file, e)| {
                if e == nix::errno::Errno::EWOULDBLOCK {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    Error::runtime(format!(
                        "pid file {shown} is locked by a running start_server (pid {}): stop it \
                         first (start_server --stop --pid-file={shown}) or use another --pid-file",
                        text.trim()
                    ))
                } else {
                    Error::runtime(format!("failed to lock pid file {shown}: {}", e.desc()))
                }
            })?;
        Ok(PidFile { owned, file })
    }

    /// The locked file's fd, which an upgrade in place hands to the next image (the lock belongs
    /// to the open file, so it goes with it).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The pid file an earlier image locked (see [`PidFile::raw_fd`]).
    ///
    /// # Safety
    ///
    /// `fd` must be the open, locked pid file at `path`, owned by nothing else.
    pub unsafe fn adopt(fd: RawFd, path: &Path) -> Result<PidFile> {
        // SAFETY: the caller promises the fd is open and ours alone.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut owned = Owned::at(path, "--pid-file")?;
        if let Ok(meta) = file.metadata() {
            owned.made(&meta);
        }
        // Locking again through the open file that holds the lock succeeds at once.
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::runtime(format!(
                "failed to keep the lock of pid file {}: {}",
                path.display(),
                e.desc()
            ))
        })?;
        Ok(PidFile { owned, file })
    }

    /// Writes this process's pid (called after daemonizing, so it is the daemon's). A file that
    /// was there before is start_server's from now on.
    pub fn write_pid(&mut self) -> Result<()> {
        let what = || format!("failed to write pid file {}", self.owned.path().display());
        self.file.set_len(0).context(what)?;
        self.file.rewind().context(what)?;
        self.file
            .write_all(crate::wire::pid_file::format(std::process::id()).as_bytes())
            .context(what)?;
        self.file.flush().context(what)?;
        let meta = self.file.metadata().context(what)?;
        self.owned.made(&meta);
        Ok(())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so a waiting --stop sees the file gone.
        self.owned.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ss-pidfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_that_was_there_is_left_alone_unless_written() {
        let dir = scratch("there");
        let path = dir.join("app.pid");
        std::fs::write(&path, "stale\n").unwrap();
        drop(PidFile::lock(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stale\n");
        let mut pid_file = PidFile::lock(&path).unwrap();
        pid_file.write_pid().unwrap();
        drop(pid_file);
        assert!(!path.exists(), "written by us: ours to remove");
        drop(PidFile::lock(&path).unwrap());
        assert!(!path.exists(), "created by us: ours to remove");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
