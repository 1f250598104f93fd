//! Another local user, for what start_server run as root must not trust: commands run as
//! `nobody` (uid and gid 65534, no supplementary groups) through util-linux's `setpriv`.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// The unprivileged user the attacks run as (Debian's `nobody`/`nogroup`).
pub const NOBODY: u32 = 65534;

/// A Python that every user may run (root's PATH may find one under /root, which others cannot
/// read).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Fails the test unless it runs as root: what it shows is what root trusts of other users.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test plays root against another user: run it as root (as .ci/run does)"
    );
}

/// `program` run as `uid` (group `uid`, no supplementary groups), from `/`, with the system
/// directories alone in PATH.
pub fn as_user(uid: u32, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program)
        .current_dir("/")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

/// The uid owning `path` (not following a link).
pub fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .uid()
}
