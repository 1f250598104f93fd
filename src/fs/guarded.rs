//! The files start_server creates, often as root and in a directory other users can write to
//! (`/tmp`, `/var/tmp`, a service's run directory): none of them follows a symbolic link another
//! user could have planted at its name, so such a link never makes start_server write to the
//! link's target. Links only root (or start_server's own user) could have made, such as
//! `/dev/stdout` or a log file linked there by a container image, are followed as before.

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::error::{Context, Error, Result};
use crate::vocab::trust;

/// How many temporary names [`replace`] tries before giving up.
const TEMP_TRIES: u32 = 8;

/// Opens `path` with `options`; a symbolic link at `path` is followed only if no other user
/// could have planted it (see [`planted_by_others`]), else refused with an error naming `what`.
/// Only a regular file or a character device (`/dev/stdout`, `/dev/null`) is accepted: a FIFO
/// another user planted would block the open, or every write, forever.
pub fn open_guarded(options: &mut OpenOptions, path: &Path, what: &str) -> Result<File> {
    let failed = |e: std::io::Error| {
        Error::runtime(format!("failed to open {what} {}: {e}", path.display()))
    };
    // O_NONBLOCK: opening a FIFO must not wait for a partner (ENXIO instead, for writing).
    let opened = match options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(not_a_file(path, what, "a FIFO (named pipe)"));
        }
        // ELOOP, or EACCES for a link in a sticky directory when creating.
        Err(_) if is_symlink(path) => match planted_by_others(path) {
            None => match options.custom_flags(libc::O_NONBLOCK).open(path) {
                Ok(file) => file,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    return Err(not_a_file(path, what, "a FIFO (named pipe)"));
                }
                Err(e) => return Err(failed(e)),
            },
            Some(why) => {
                return Err(Error::runtime(format!(
                    "refusing to open {what} {}: it is a symbolic link {why}, which another user \
                     could have planted (give the path of the file itself)",
                    path.display()
                )));
            }
        },
        Err(e) => return Err(failed(e)),
    };
    let meta = opened.metadata().map_err(failed)?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_char_device() || is_own_stdio(&meta)) {
        return Err(not_a_file(path, what, file_kind(&kind)));
    }
    clear_nonblock(&opened).map_err(failed)?;
    Ok(opened)
}

/// `/dev/stdout` or `/dev/stderr` when that is a pipe: start_server's own, so not planted, and
/// with a reader.
fn is_own_stdio(meta: &std::fs::Metadata) -> bool {
    use std::os::fd::AsFd;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    [stdout.as_fd(), stderr.as_fd()].into_iter().any(|fd| {
        nix::sys::stat::fstat(fd)
            .is_ok_and(|own| own.st_dev == meta.dev() && own.st_ino == meta.ino())
    })
}

/// The error for a `what` at `path` that is `kind` instead of a regular file.
fn not_a_file(path: &Path, what: &str, kind: &str) -> Error {
    Error::runtime(format!(
        "refusing to open {what} {}: it is {kind}, not a regular file (remove it, or give the \
         path of a regular file)",
        path.display()
    ))
}

/// A file type in words, for errors and warnings.
pub fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "of an unknown type"
    }
}

/// Writes to the file block again, as they would have without `O_NONBLOCK`.
fn clear_nonblock(file: &File) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(file, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) - OFlag::O_NONBLOCK;
    fcntl(file, FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
    Ok(())
}

/// Why the link at `path` could have been made, or swapped since, by a user other than root
/// and start_server's own: it is theirs, or its directory is theirs or writable by them (a
/// sticky directory, such as /tmp, protects links that are not theirs).
fn planted_by_others(path: &Path) -> Option<String> {
    let link = match std::fs::symlink_metadata(path) {
        Ok(link) => link,
        Err(e) => return Some(format!("that cannot be examined ({e})")),
    };
    if !trust::trusted_uid(link.uid()) {
        return Some(format!("owned by uid {}", link.uid()));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("in a directory that cannot be examined ({e})")),
    };
    if !trust::trusted_uid(meta.uid()) {
        return Some(format!("in {}, owned by uid {}", dir.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        return Some(format!(
            "in {}, which other users can write to",
            dir.display()
        ));
    }
    None
}

/// Replaces `path`'s content atomically: writes a new file beside it, then renames it over
/// `path` (a link at `path` itself is replaced, not followed). The new file is created
/// exclusively: anything already at its name is left alone and another name is tried. Returns
/// the new file's metadata (its inode is the one now at `path`).
pub fn replace(path: &Path, contents: &[u8]) -> Result<std::fs::Metadata> {
    let (temp, mut file) = create_temp(path)?;
    let result = file
        .write_all(contents)
        .context(|| format!("failed to write temporary file {}", temp.display()))
        .and_then(|()| {
            file.metadata()
                .context(|| format!("failed to inspect temporary file {}", temp.display()))
        })
        .and_then(|meta| {
            std::fs::rename(&temp, path)
                .context(|| format!("failed to rename {} to {}", temp.display(), path.display()))
                .map(|()| meta)
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
    use std::os::unix::fs::PermissionsExt;

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
    fn a_link_is_followed_only_where_no_other_user_could_have_planted_it() {
        let dir = scratch("open");
        let target = dir.join("target");
        std::fs::write(&target, "mine\n").unwrap();
        let link = dir.join("app.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let append = || OpenOptions::new().append(true).create(true).clone();
        // Our own link in our own directory (mode 0755): followed, as /dev/stdout is.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut file = open_guarded(&mut append(), &link, "log file").unwrap();
        file.write_all(b"appended\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "mine\nappended\n"
        );
        // The same link where anyone could have put it: refused, the target untouched.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_guarded(&mut append(), &link, "log file").unwrap_err();
        assert!(e.to_string().contains("is a symbolic link in"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "mine\nappended\n"
        );
        // In a sticky directory (as /tmp), our own link cannot be swapped: followed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(open_guarded(&mut append(), &link, "log file").is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
