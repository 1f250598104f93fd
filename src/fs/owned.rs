//! Files start_server makes at paths the operator named (pid, status, control socket, unix
//! sockets): the path must be safe (no other user can change its directories, see
//! `vocab::trust`), its directory is held open from the start, and at exit the file is removed
//! through that directory only if its name still leads to the inode start_server made. A file
//! that was there before, or was put in place of start_server's since, is left alone, and a
//! directory swapped meanwhile cannot redirect the removal elsewhere.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::vocab::trust;

/// A path start_server makes a file at, and the file it made there.
#[derive(Debug)]
pub struct Owned {
    path: PathBuf,
    /// `None` when the directory does not exist (nothing can be made there: the creation fails
    /// with the caller's own message).
    dir: Option<OwnedFd>,
    name: OsString,
    /// The file start_server made (device, inode), once it has.
    made: Option<(u64, u64)>,
}

impl Owned {
    /// `path` (for `what`, e.g. "--pid-file"); as root, once its directories are found safe
    /// (another user could otherwise swap them under root's feet; without root, what a swap could
    /// reach is the user's own anyway, and the removal through the directory held open keeps it
    /// to the file made).
    pub fn at(path: &Path, what: &str) -> Result<Owned> {
        if nix::unistd::geteuid().is_root()
            && let Some(why) = trust::unsafe_path(path)
        {
            return Err(Error::runtime(format!(
                "{what} {}: {why}: another user could replace the file or its directory; use a \
                 directory only root or start_server's user can write to (or a sticky one, such \
                 as /tmp)",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .ok_or_else(|| Error::usage(format!("{what} {}: not a file name", path.display())))?
            .to_os_string();
        let parent = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let dir = match nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(dir) => Some(dir),
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => None,
            Err(e) => {
                return Err(Error::runtime(format!(
                    "{what} {}: cannot open its directory: {}",
                    path.display(),
                    e.desc()
                ))
                .caused_by(e));
            }
        };
        Ok(Owned {
            path: path.to_path_buf(),
            dir,
            name,
            made: None,
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file now at the path (device, inode), not following a link; `None` if there is none.
    pub fn current(&self) -> Option<(u64, u64)> {
        let dir = self.dir.as_ref()?;
        nix::sys::stat::fstatat(
            dir.as_fd(),
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
    }

    /// start_server made (or took over) the file with this metadata at the path.
    pub fn made(&mut self, meta: &std::fs::Metadata) {
        self.made = Some((meta.dev(), meta.ino()));
    }

    /// start_server made the file now at the path (after an upgrade: the image before made it).
    pub fn made_current(&mut self) {
        self.made = self.current();
    }

    /// Whether start_server made a file here.
    pub fn is_made(&self) -> bool {
        self.made.is_some()
    }

    /// Removes the file start_server made, if the path still leads to it.
    pub fn remove(&mut self) {
        if let Some(made) = self.made.take()
            && self.current() == Some(made)
            && let Some(dir) = &self.dir
        {
            let _ = nix::unistd::unlinkat(
                dir.as_fd(),
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ss-owned-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn only_the_file_made_is_removed() {
        let dir = scratch("remove");
        let path = dir.join("app.pid");
        let mut owned = Owned::at(&path, "--pid-file").unwrap();
        std::fs::write(&path, "1\n").unwrap();
        owned.made(&std::fs::metadata(&path).unwrap());
        // Replaced since: the replacement stays.
        std::fs::write(dir.join("new"), "2\n").unwrap();
        std::fs::rename(dir.join("new"), &path).unwrap();
        owned.remove();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
        // Made and still there: removed.
        owned.made(&std::fs::metadata(&path).unwrap());
        owned.remove();
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_swapped_for_a_link_does_not_redirect_the_removal() {
        let dir = scratch("swap");
        let (real, elsewhere) = (dir.join("run"), dir.join("elsewhere"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        let mut owned = Owned::at(&real.join("app.pid"), "--pid-file").unwrap();
        std::fs::write(real.join("app.pid"), "1\n").unwrap();
        owned.made(&std::fs::metadata(real.join("app.pid")).unwrap());
        std::fs::write(elsewhere.join("app.pid"), "precious\n").unwrap();
        std::fs::rename(&real, dir.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        owned.remove();
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("app.pid")).unwrap(),
            "precious\n"
        );
        assert!(
            !dir.join("moved/app.pid").exists(),
            "ours went, where it is now"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_in_a_directory_others_can_write_is_refused() {
        let dir = scratch("refuse");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Owned::at(&dir.join("app.pid"), "--pid-file").unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
