//! `--pid-file`: start_server's pid, under an exclusive `flock` held for its whole life, so that
//! `--stop` can wait for it to exit by taking the lock, and a second start_server on the same
//! file is refused instead of overwriting the first one's pid.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Context, Error, Result};
use crate::server::files::guarded;

/// A locked pid file, removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: Flock<File>,
}

impl PidFile {
    /// Opens and locks the file. Fails at once if another process holds the lock.
    pub fn lock(path: &Path) -> Result<PidFile> {
        let shown = path.display();
        // Opened in place (the lock is on this file), never through a link planted at its name.
        let file = guarded::open_guarded(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644),
            path,
            "pid file",
        )?;
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
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
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
        // Locking again through the open file that holds the lock succeeds at once.
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::runtime(format!(
                "failed to keep the lock of pid file {}: {}",
                path.display(),
                e.desc()
            ))
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes this process's pid (called after daemonizing, so it is the daemon's).
    pub fn write_pid(&mut self) -> Result<()> {
        let what = || format!("failed to write pid file {}", self.path.display());
        self.file.set_len(0).context(what)?;
        self.file.rewind().context(what)?;
        self.file
            .write_all(crate::wire::pid_file::format(std::process::id()).as_bytes())
            .context(what)?;
        self.file.flush().context(what)
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so a waiting --stop sees the file gone.
        let _ = std::fs::remove_file(&self.path);
    }
}
