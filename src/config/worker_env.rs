//! The environment a worker gets: start_server's own, the envdir on top (re-read at every spawn,
//! so a removed file unsets its variable again), then the socket and generation variables.
//! The settings the original reads from the environment come from the same merged view.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use tracing::warn;

use crate::supervisor::Tunables;

/// Variables that describe start_server's own sockets, notification socket, watchdog, fd store
/// and process to it (set by systemd, or by whoever started start_server), and those
/// start_server writes for each worker: workers must not take an inherited one for theirs, from
/// start_server's environment or from the envdir. Only start_server talks to systemd; the
/// variables a worker gets are written anew for it.
pub const NOT_INHERITED: [&str; 12] = [
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    // systemd 258+: the pidfd inode of the intended receiver; a worker's sd_listen_fds() would
    // reject its sockets if it saw start_server's.
    "LISTEN_PIDFDID",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "FDSTORE",
    "SYSTEMD_EXEC_PID",
    // Written for every worker: a value from start_server's own environment would describe
    // sockets, a generation or a slot the worker does not have.
    "SERVER_STARTER_PORT",
    "SERVER_STARTER_GENERATION",
    "SERVER_STARTER_WORKER",
];

/// Whether `name` is one of [`NOT_INHERITED`].
pub fn not_inherited(name: &OsStr) -> bool {
    NOT_INHERITED.iter().any(|v| name == OsStr::new(v))
}

/// A set of environment variables.
pub type Env = BTreeMap<OsString, OsString>;

/// What an envdir says: variables to set, and variables to remove.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvDir {
    /// Files with content: NAME=first line.
    pub set: Env,
    /// Empty files: NAME is removed, whatever start_server's own environment says.
    pub unset: Vec<OsString>,
    /// Entries skipped because reading them could block or never end: an error at start-up,
    /// a warning when re-read at run time.
    pub refused: Vec<Refused>,
}

/// An envdir entry that is not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Neither a regular file nor a directory (a FIFO, a socket, a device), described.
    Special {
        path: std::path::PathBuf,
        kind: &'static str,
    },
    /// A file whose first line is longer than [`ENVDIR_LINE_MAX`].
    LongLine { path: std::path::PathBuf },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Special { path, kind } => write!(
                f,
                "refusing envdir entry {}: it is {kind}, not a regular file (remove it)",
                path.display()
            ),
            Refused::LongLine { path } => write!(
                f,
                "refusing envdir file {}: its first line is longer than {} KiB (shorten it)",
                path.display(),
                ENVDIR_LINE_MAX / 1024
            ),
        }
    }
}

impl std::error::Error for Refused {}

impl EnvDir {
    /// Applies the directory on top of `env`; the variables start_server writes for workers
    /// (or keeps from them) are left as they are.
    pub fn apply_to(self, env: &mut Env) {
        for name in self.unset.iter().filter(|n| !not_inherited(n)) {
            env.remove(name);
        }
        env.extend(self.set.into_iter().filter(|(n, _)| !not_inherited(n)));
    }
}

/// The most an envdir file's first line may hold; a longer one is refused, not cut.
pub const ENVDIR_LINE_MAX: u64 = 64 * 1024;

/// Reads a daemontools-style envdir: each file NAME not starting with `.` sets NAME to its first
/// line (without the newline); an empty file removes NAME, as daemontools' `envdir` does.
/// Unreadable entries and directories are skipped, as the original does; anything else that
/// is not a regular file is never read (see [`EnvDir::refused`]), nor more than
/// [`ENVDIR_LINE_MAX`] bytes of a file. A file removed since the last read simply no longer
/// applies: the variable is back to what start_server's own environment says.
pub fn read_envdir(dir: &Path) -> std::io::Result<EnvDir> {
    let mut read = EnvDir::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().first() == Some(&b'.') || name.as_bytes().contains(&b'=') {
            continue;
        }
        let path = entry.path();
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        if !meta.is_file() {
            read.refused.push(Refused::Special {
                path,
                kind: special_kind(&meta.file_type()),
            });
            continue;
        }
        let mut line = Vec::new();
        match BufReader::new(file.take(ENVDIR_LINE_MAX + 1)).read_until(b'\n', &mut line) {
            Ok(0) => {
                read.unset.push(name);
                continue;
            }
            Err(_) => continue,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.len() as u64 > ENVDIR_LINE_MAX {
            read.refused.push(Refused::LongLine { path });
            continue;
        }
        if line.contains(&0) {
            warn!(
                "envdir file {} contains a NUL byte, skipped",
                path.display()
            );
            continue;
        }
        read.set.insert(name, OsString::from_vec(line));
    }
    Ok(read)
}

/// What a file that is neither regular nor a directory is, in words.
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "of an unknown type"
    }
}

/// `AUTO_RESTART_INTERVAL` when unset (or 0), as in the original.
const DEFAULT_AUTO_RESTART_INTERVAL: Duration = Duration::from_secs(360);

/// `KILL_OLD_DELAY` when unset and auto-restart is on (otherwise 0), as in the original.
const AUTO_RESTART_KILL_OLD_DELAY: Duration = Duration::from_secs(5);

/// The settings that the environment (and so the envdir) controls, as the original reads them.
pub fn tunables(env: &Env) -> Tunables {
    let get = |name: &str| env.get(OsStr::new(name)).map(|v| v.to_string_lossy());
    let truthy = |v: &str| !v.is_empty() && v != "0";
    let auto = get("ENABLE_AUTO_RESTART").is_some_and(|v| truthy(&v));
    let seconds = |name: &str| {
        let value = get(name)?;
        match crate::vocab::time::seconds(&value) {
            Some(d) => Some(d),
            None => {
                warn!("ignoring {name}={value:?}: not a number of seconds");
                None
            }
        }
    };
    let interval = seconds("AUTO_RESTART_INTERVAL")
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_AUTO_RESTART_INTERVAL);
    let default_delay = if auto {
        AUTO_RESTART_KILL_OLD_DELAY
    } else {
        Duration::ZERO
    };
    Tunables {
        kill_old_delay: seconds("KILL_OLD_DELAY").unwrap_or(default_delay),
        auto_restart_interval: auto.then_some(interval),
    }
}

/// Flattens an environment into `NAME=VALUE` byte strings.
pub fn entries(env: &Env) -> impl Iterator<Item = OsString> + '_ {
    env.iter().map(|(name, value)| {
        let mut entry = name.clone();
        entry.push("=");
        entry.push(value);
        entry
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn defaults_follow_the_original() {
        let t = tunables(&env(&[]));
        assert_eq!(t.kill_old_delay, Duration::ZERO);
        assert_eq!(t.auto_restart_interval, None);
        let t = tunables(&env(&[("ENABLE_AUTO_RESTART", "1")]));
        assert_eq!(t.kill_old_delay, Duration::from_secs(5));
        assert_eq!(t.auto_restart_interval, Some(Duration::from_secs(360)));
        let t = tunables(&env(&[
            ("ENABLE_AUTO_RESTART", "0"),
            ("KILL_OLD_DELAY", "2"),
        ]));
        assert_eq!(t.auto_restart_interval, None);
        assert_eq!(t.kill_old_delay, Duration::from_secs(2));
        let t = tunables(&env(&[
            ("ENABLE_AUTO_RESTART", "yes"),
            ("AUTO_RESTART_INTERVAL", "10"),
            ("KILL_OLD_DELAY", "0"),
        ]));
        assert_eq!(t.auto_restart_interval, Some(Duration::from_secs(10)));
        assert_eq!(t.kill_old_delay, Duration::ZERO);
    }

    #[test]
    fn envdir_takes_first_lines_and_skips_dotfiles() {
        let dir = std::env::temp_dir().join(format!("ss-envdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("A"), "one\ntwo\n").unwrap();
        std::fs::write(dir.join("B"), "").unwrap();
        std::fs::write(dir.join("C"), "\n").unwrap();
        std::fs::write(dir.join(".hidden"), "x").unwrap();
        std::fs::write(dir.join("D"), "no newline").unwrap();
        let read = read_envdir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            read.set,
            env(&[("A", "one"), ("C", ""), ("D", "no newline")])
        );
        assert_eq!(read.unset, vec![OsString::from("B")]);
        let mut base = env(&[("B", "from start_server"), ("A", "old"), ("E", "kept")]);
        read.apply_to(&mut base);
        assert_eq!(
            base,
            env(&[("A", "one"), ("C", ""), ("D", "no newline"), ("E", "kept")])
        );
    }

    #[test]
    fn envdir_reads_at_most_a_capped_first_line_and_never_a_fifo() {
        let dir = std::env::temp_dir().join(format!("ss-envdir-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = vec![b'x'; ENVDIR_LINE_MAX as usize + 1];
        std::fs::write(dir.join("LONG"), &long).unwrap();
        let mut short_then_long = b"short\n".to_vec();
        short_then_long.extend(&long);
        std::fs::write(dir.join("SHORT"), &short_then_long).unwrap();
        let max = vec![b'y'; ENVDIR_LINE_MAX as usize];
        std::fs::write(dir.join("MAX"), &max).unwrap();
        nix::unistd::mkfifo(&dir.join("FIFO"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let read = read_envdir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read.set.len(), 2, "{read:?}");
        assert_eq!(read.set[OsStr::new("SHORT")], "short");
        assert_eq!(read.set[OsStr::new("MAX")].len(), max.len());
        assert_eq!(read.refused.len(), 2, "{:?}", read.refused);
        assert!(read.refused.iter().any(|r| r.to_string().contains("LONG")));
        assert!(read.refused.iter().any(|r| r.to_string().contains("FIFO")));
    }
}
