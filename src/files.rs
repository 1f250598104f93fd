//! The files start_server creates, often as root and in a directory other users can write to
//! (`/tmp`, `/var/tmp`, a service's run directory): none of them follows a symbolic link at its
//! own name, so a link planted there can never make start_server write to the link's target.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Context, Error, Result};

/// How many temporary names [`replace`] tries before giving up.
const TEMP_TRIES: u32 = 8;

/// Opens `path` with `options`, refusing (with an error naming `what`) if it is a symbolic link.
pub fn open_no_follow(options: &mut OpenOptions, path: &Path, what: &str) -> Result<File> {
    match options.custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && is_symlink(path) => {
            Err(Error::runtime(format!(
                "refusing to open {what} {}: it is a symbolic link, which start_server does not \
                 follow (give the path of the file itself)",
                path.display()
            )))
        }
        Err(e) => Err(e).context(|| format!("failed to open {what} {}", path.display())),
    }
}

/// Replaces `path`'s content atomically: writes a new file beside it, then renames it over
/// `path` (a link at `path` itself is replaced, not followed). The new file is created
/// exclusively: anything already at its name is left alone and another name is tried.
pub fn replace(path: &Path, contents: &[u8]) -> Result<()> {
    let (temp, mut file) = create_temp(path)?;
    let result = file
        .write_all(contents)
        .context(|| format!("failed to write temporary file {}", temp.display()))
        .and_then(|()| {
            std::fs::rename(&temp, path)
                .context(|| format!("failed to rename {} to {}", temp.display(), path.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A new file named `PATH.<pid>`, or `PATH.<pid>.<random>` when that name is taken.
fn create_temp(path: &Path) -> Result<(PathBuf, File)> {
    let mut base = path.as_os_str().to_os_string();
    base.push(format!(".{}", std::process::id()));
    let random = RandomState::new();
    for attempt in 0..TEMP_TRIES {
        let mut name = base.clone();
        if attempt > 0 {
            name.push(format!(".{:016x}", random.hash_one(attempt)));
        }
        let name = PathBuf::from(name);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&name);
        match created {
            Ok(file) => return Ok((name, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => warn!(
                "{} already exists{}: left alone, trying another temporary name",
                name.display(),
                if is_symlink(&name) {
                    " (a symbolic link, not followed)"
                } else {
                    ""
                }
            ),
            Err(e) => {
                return Err(e)
                    .context(|| format!("failed to create temporary file {}", name.display()));
            }
        }
    }
    Err(Error::runtime(format!(
        "failed to create a temporary file beside {}: every name tried exists",
        path.display()
    )))
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ss-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_link_at_the_temporary_name_is_neither_followed_nor_removed() {
        let dir = scratch("temp");
        let target = dir.join("target");
        std::fs::write(&target, "mine\n").unwrap();
        let status = dir.join("status");
        let planted = PathBuf::from(format!("{}.{}", status.display(), std::process::id()));
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        replace(&status, b"1:2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&status).unwrap(), "1:2\n");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine\n");
        assert!(is_symlink(&planted));
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 3, "no temporary file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_at_the_name_itself_is_refused() {
        let dir = scratch("open");
        let target = dir.join("target");
        std::fs::write(&target, "mine\n").unwrap();
        let link = dir.join("app.pid");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_no_follow(
            OpenOptions::new().append(true).create(true),
            &link,
            "pid file",
        )
        .unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
