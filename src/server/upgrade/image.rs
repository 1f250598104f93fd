//! The program start_server runs as, which an upgrade executes anew.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The program start_server runs as: the binary at the path it was started as (never
/// /proc/self/exe, which is the old file, possibly deleted by a package upgrade), and its
/// command line.
#[derive(Debug, Clone)]
pub struct Image {
    /// Absolute, as found at start-up (symbolic links are kept: a package may move them).
    pub binary: PathBuf,
    /// The command line, without `--upgrade-state`.
    pub argv: Vec<OsString>,
}

impl Image {
    /// This process's binary and command line, resolved now (before anything changes the
    /// working directory).
    pub fn current() -> Image {
        let mut argv: Vec<OsString> = std::env::args_os().collect();
        if argv
            .get(1)
            .is_some_and(|a| a.as_bytes().starts_with(b"--upgrade-state="))
        {
            argv.remove(1);
        }
        let zero = argv.first().cloned().unwrap_or_default();
        Image {
            binary: resolve_binary(&zero),
            argv,
        }
    }
}

/// `argv[0]` as a path: absolute as it is, relative to the working directory if it has a slash,
/// else looked up in `PATH` as the shell did.
fn resolve_binary(zero: &std::ffi::OsStr) -> PathBuf {
    let path = Path::new(zero);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    if zero.as_bytes().contains(&b'/') {
        return std::env::current_dir()
            .map(|dir| dir.join(path).components().collect())
            .unwrap_or_else(|_| path.to_path_buf());
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| path.to_path_buf())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
