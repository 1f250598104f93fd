//! Who could have made or changed a path: the rules start_server and its client commands apply
//! before they believe a file, signal a pid from it, connect to a socket or execute a binary.
//! Trusted are root and the user start_server (or the client) runs as; a path is as safe as its
//! directories: each must belong to a trusted user and be writable by no one else, unless it is
//! sticky (as `/tmp`), where others cannot rename or remove what is not theirs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Root, or the user this process runs as.
pub fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Why the directory `dir` could be changed by another user, if it could. One that does not
/// exist is not (its parent, checked too, decides who could make it).
pub fn unsafe_directory(dir: &Path) -> Option<String> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("{} cannot be examined ({e})", dir.display())),
    };
    if !trusted_uid(meta.uid()) {
        return Some(format!("{} is owned by uid {}", dir.display(), meta.uid()));
    }
    let writable_by_others = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if writable_by_others && !sticky {
        return Some(format!(
            "{} is writable by other users (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Why a file at `path` could be replaced, or its directories swapped, by another user: the
/// first directory above it (as written, and as it resolves) that is not safe.
pub fn unsafe_path(path: &Path) -> Option<String> {
    let absolute = match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(e) => return Some(format!("the working directory cannot be examined ({e})")),
    };
    let mut seen: Vec<PathBuf> = Vec::new();
    let parent = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    let resolved = parent.canonicalize().unwrap_or_else(|_| parent.clone());
    for base in [parent, resolved] {
        for dir in base.ancestors() {
            if seen.iter().any(|d| d == dir) {
                continue;
            }
            seen.push(dir.to_path_buf());
            // A link on the way is followed only if no other user could have made it.
            if let Ok(link) = std::fs::symlink_metadata(dir)
                && link.file_type().is_symlink()
                && !trusted_uid(link.uid())
            {
                return Some(format!(
                    "{} is a symbolic link owned by uid {}",
                    dir.display(),
                    link.uid()
                ));
            }
            if let Some(why) = unsafe_directory(dir) {
                return Some(why);
            }
        }
    }
    None
}

/// Why the socket (or file) at `path` could be another user's than `owner`'s: it is not
/// `owner`'s, or a directory above it is writable by someone but root and `owner` (sticky or
/// not: here no one else may even add a name). A root client believes a control socket of another
/// user only where that user alone (with root) decides what listens: its `RuntimeDirectory=`.
pub fn not_only_theirs(path: &Path, owner: u32) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{} cannot be examined ({e})", path.display())),
    };
    if meta.uid() != owner {
        return Some(format!("{} belongs to uid {}", path.display(), meta.uid()));
    }
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let parent = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    let resolved = parent.canonicalize().unwrap_or_else(|_| parent.clone());
    // The path as written too: a link on the way lives in a directory of its own, and whoever
    // may write that one chose where the link leads.
    [parent, resolved]
        .iter()
        .flat_map(|base| base.ancestors())
        .find_map(|dir| others_may_write(dir, owner))
}

/// Why a directory on the way to `owner`'s file lets a third user swap what is in it.
/// Sticky is not enough here: the owner alone must be able to replace the file.
fn others_may_write(dir: &Path, owner: u32) -> Option<String> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Some(format!("{} cannot be examined", dir.display()));
    };
    if meta.uid() != 0 && meta.uid() != owner {
        return Some(format!("{} belongs to uid {}", dir.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{} is writable by other users (mode {:o})",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ss-trust-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_path_is_only_theirs_in_directories_no_one_else_writes() {
        // The scratch directory's own ancestors (/tmp) are shared, so the walk is
        // checked one directory at a time and the file's owner on its own.
        let dir = scratch("theirs");
        let file = dir.join("control");
        std::fs::write(&file, "").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert!(
            not_only_theirs(&file, me + 1)
                .unwrap()
                .contains("belongs to uid")
        );
        assert_eq!(others_may_write(&dir, me), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let why = others_may_write(&dir, me).unwrap();
        assert!(
            why.contains("writable by other users"),
            "sticky is not enough: {why}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_unsafe_unless_sticky() {
        let dir = scratch("dirs");
        let file = dir.join("app.pid");
        assert_eq!(unsafe_path(&file), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = unsafe_path(&file).unwrap();
        assert!(why.contains("writable by other users"), "{why}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(unsafe_path(&file), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
