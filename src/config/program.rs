//! Finding the server program the way `execvp` would, before anything is forked, so that a
//! missing or non-executable program is reported once and clearly instead of as a worker that
//! keeps failing to start.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Used when the environment has no `PATH`, as glibc's `execvp` does.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The path to exec for `name`. A name with a `/` is used as it is (relative to `dir`, which the
/// worker changes to first); other names are looked up in `path_var`.
pub fn resolve(
    name: &OsStr,
    path_var: Option<&OsStr>,
    dir: Option<&Path>,
) -> Result<PathBuf, ResolveError> {
    if name.is_empty() {
        return Err(ResolveError::Empty);
    }
    let in_dir = |p: &Path| match dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match check_executable(&in_dir(&path)) {
            Ok(()) => Ok(path),
            Err(why) => Err(ResolveError::Unusable { path, why }),
        };
    }
    let search: OsString = path_var.map_or_else(|| DEFAULT_PATH.into(), OsStr::to_os_string);
    for entry in std::env::split_paths(&search) {
        let entry = if entry.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            entry
        };
        let candidate = entry.join(name);
        if check_executable(&in_dir(&candidate)).is_ok() {
            return Ok(candidate);
        }
    }
    Err(ResolveError::NotFound {
        name: name.to_os_string(),
        search,
    })
}

/// Why the server program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The command line's program is an empty string.
    Empty,
    /// A path (a name with a `/`) that is missing, not a file, or not executable.
    Unusable { path: PathBuf, why: &'static str },
    /// A bare name found in no directory of `PATH`.
    NotFound { name: OsString, search: OsString },
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::Empty => write!(
                f,
                "the server program name is empty: give the program after the options"
            ),
            ResolveError::Unusable { path, why } => {
                let what_to_do = match *why {
                    "is not executable" => "chmod +x it",
                    _ => "give the path of the program to run",
                };
                write!(f, "server program {} {why}: {what_to_do}", path.display())
            }
            ResolveError::NotFound { name, search } => write!(
                f,
                "server program {} not found in PATH ({}): give its full path",
                Path::new(name).display(),
                search.to_string_lossy()
            ),
        }
    }
}

impl std::error::Error for ResolveError {}

fn check_executable(path: &Path) -> Result<(), &'static str> {
    let meta = std::fs::metadata(path).map_err(|_| "does not exist")?;
    if !meta.is_file() {
        return Err("is not a regular file");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path() {
        let found = resolve(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin")),
            None,
        );
        assert_eq!(found, Ok(PathBuf::from("/bin/sh")));
    }

    #[test]
    fn reports_missing_and_non_executable() {
        let err =
            resolve(OsStr::new("no-such-prog-x"), Some(OsStr::new("/bin")), None).unwrap_err();
        assert!(
            err.to_string().contains("not found in PATH (/bin)"),
            "{err}"
        );
        let err = resolve(OsStr::new("/etc/passwd"), None, None).unwrap_err();
        assert!(err.to_string().contains("is not executable"), "{err}");
        let err = resolve(OsStr::new("./nope"), None, Some(Path::new("/"))).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(resolve(OsStr::new("/etc"), None, None).is_err());
    }

    #[test]
    fn relative_names_with_slash_are_relative_to_dir() {
        assert_eq!(
            resolve(OsStr::new("./sh"), None, Some(Path::new("/bin"))),
            Ok(PathBuf::from("./sh"))
        );
    }
}
