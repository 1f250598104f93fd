//! The program start_server runs as, which an upgrade executes anew: start_server's own file,
//! found from `/proc/self/exe` at start-up (never through `argv[0]`, `PATH` or the working
//! directory), opened once when an upgrade begins so that the file checked is the file executed,
//! and only if no user but root or start_server's own could have put it there.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::refusal::Refusal;
use crate::vocab::trust;

/// The options an upgrade adds to the command line of the next image (and of the image it rolls
/// back to): not part of the operator's command line.
pub const ADDED_OPTIONS: [&str; 3] = [
    "--upgrade-state=",
    "--upgrade-rollback=",
    "--upgrade-rolled-back=",
];

/// The program start_server runs as.
#[derive(Debug, Clone)]
pub struct Image {
    /// The file start_server runs from, as `/proc/self/exe` named it at start-up (the path a
    /// package upgrade puts the new version at).
    pub binary: PathBuf,
    /// The command line, without the options an upgrade adds.
    pub argv: Vec<OsString>,
}

/// The binary an upgrade executes, open.
#[derive(Debug)]
pub struct Binary {
    pub fd: OwnedFd,
    /// A script (`#!`): its interpreter opens it through `/dev/fd`, so the fd must stay open
    /// across the exec.
    pub script: bool,
}

impl Image {
    /// This process's binary and command line.
    pub fn current() -> Image {
        let mut argv: Vec<OsString> = std::env::args_os().collect();
        argv = argv
            .into_iter()
            .enumerate()
            .filter(|(i, a)| {
                *i == 0
                    || !ADDED_OPTIONS
                        .iter()
                        .any(|o| a.as_bytes().starts_with(o.as_bytes()))
            })
            .map(|(_, a)| a)
            .collect();
        Image {
            binary: own_binary(),
            argv,
        }
    }

    /// Opens the file now at the binary's path, if no other user could have put it there:
    /// the file (owned by root or start_server's user, writable by no one else) and every
    /// directory above it, as sshd's StrictModes checks.
    pub fn open(&self) -> Result<Binary, Refusal> {
        let untrusted = |why: String| Refusal::Untrusted {
            binary: self.binary.clone(),
            why,
        };
        if let Some(why) = trust::unsafe_path(&self.binary) {
            return Err(untrusted(why));
        }
        let fd = nix::fcntl::open(
            &self.binary,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Refusal::CannotRun {
            binary: self.binary.clone(),
            error: e.into(),
        })?;
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|error| Refusal::CannotRun {
            binary: self.binary.clone(),
            error,
        })?;
        if !meta.is_file() {
            return Err(untrusted("it is not a regular file".to_string()));
        }
        if !trust::trusted_uid(meta.uid()) {
            return Err(untrusted(format!("it is owned by uid {}", meta.uid())));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "it is writable by other users (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
        let mut start = [0u8; 2];
        let script = nix::sys::uio::pread(file.as_fd(), &mut start, 0).is_ok_and(|n| n == 2)
            && &start == b"#!";
        Ok(Binary {
            fd: file.into(),
            script,
        })
    }
}

/// The file this process runs from: `/proc/self/exe` (its target, without the ` (deleted)` the
/// kernel adds once a package upgrade replaced it).
fn own_binary() -> PathBuf {
    let link = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let bytes = link.as_os_str().as_bytes();
    let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_this_process_s_own_file() {
        let image = Image::current();
        assert_eq!(
            image.binary,
            std::env::current_exe().unwrap(),
            "found without argv[0] or PATH"
        );
        assert!(image.binary.is_absolute());
    }
}
