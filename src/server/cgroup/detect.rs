//! Whether start_server may manage a cgroup subtree, decided once: systemd's delegation mark on
//! its cgroup (`Delegate=yes`), or (without systemd) a writable cgroup of its own that is not the
//! hierarchy's root; and where that cgroup is (the cgroup2 mount, even in a hybrid layout).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The leaf start_server moves itself into.
pub const SUPERVISOR: &str = "supervisor";

/// A cgroup2 hierarchy start_server may manage below its own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The delegated cgroup's directory.
    pub dir: PathBuf,
    /// Its path inside the hierarchy, as `/proc/PID/cgroup` shows it.
    pub path: String,
    /// Why it may be managed.
    pub grant: Grant,
}

/// Why a cgroup may be managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// systemd marked it delegated (`Delegate=yes`: the `trusted.delegate` or `user.delegate`
    /// extended attribute).
    Systemd,
    /// No systemd manages it, and start_server can write to it (a container's cgroup, one made
    /// for it by hand, or one named explicitly).
    Writable,
}

/// What [`decide`] needs to know, gathered by [`detect`] from /proc and the cgroup file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The `0::PATH` line of /proc/self/cgroup.
    pub path: Option<String>,
    /// Where a cgroup2 file system holding that path is mounted.
    pub mount: Option<PathBuf>,
    /// The cgroup is the hierarchy's root (it has no `cgroup.type`): never start_server's own.
    pub hierarchy_root: bool,
    /// systemd's delegation mark is on it.
    pub delegated: bool,
    /// systemd manages this system (/run/systemd/system exists).
    pub systemd: bool,
    /// Why it cannot be written to, if it cannot.
    pub not_writable: Option<String>,
}

/// Whether start_server may manage a cgroup subtree, and where; else why not, in a sentence to
/// log once (`start_server: <it>`).
pub fn detect() -> Result<Delegation, String> {
    decide(&gather())
}

/// The facts about the calling process's cgroup, or about its parent when that is the one to
/// manage: when the parent carries systemd's mark and the process's own does not (the unit has
/// `DelegateSubgroup=`, which starts it in a leaf of the delegated cgroup; or start_server was
/// exec'd again, in an upgrade in place, from its `supervisor` leaf), or when the process's
/// own cgroup is a `supervisor` leaf (exec'd again, without systemd).
pub fn gather() -> Facts {
    let mut facts = Facts {
        systemd: Path::new("/run/systemd/system").is_dir(),
        path: fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| unified_path(&text)),
        ..Facts::default()
    };
    let Some(path) = facts.path.clone() else {
        return facts;
    };
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mut dir) = cgroup2_dir(&mounts, &path) else {
        return facts;
    };
    facts.delegated = delegation_mark(&dir);
    if let Some((parent_path, name)) = path.rsplit_once('/')
        && !facts.delegated
        && !name.is_empty()
        && let Some(parent_dir) = dir.parent().map(Path::to_path_buf)
    {
        let parent_delegated = delegation_mark(&parent_dir);
        if parent_delegated || name == SUPERVISOR {
            facts.path = Some(if parent_path.is_empty() {
                "/".to_string()
            } else {
                parent_path.to_string()
            });
            facts.delegated = parent_delegated;
            dir = parent_dir;
        }
    }
    facts.hierarchy_root = !dir.join("cgroup.type").exists();
    facts.not_writable = writable(&dir).err();
    facts.mount = Some(dir);
    facts
}

/// The decision on [`Facts`]; see [`detect`].
pub fn decide(facts: &Facts) -> Result<Delegation, String> {
    let Some(path) = &facts.path else {
        return Err(
            "no cgroup v2 (only cgroup v1): workers are not given a cgroup per \
                    generation"
                .into(),
        );
    };
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(format!(
            "its cgroup {path} is outside its cgroup namespace: workers are not given a cgroup \
             per generation"
        ));
    }
    let Some(dir) = &facts.mount else {
        return Err(format!(
            "no cgroup2 file system shows its cgroup {path}: workers are not given a cgroup per \
             generation (mount cgroup2 on /sys/fs/cgroup)"
        ));
    };
    if facts.hierarchy_root {
        return Err(
            "it runs in the root cgroup, which is not its own: workers are not given a \
                    cgroup per generation (under systemd, set Delegate=yes in the unit)"
                .into(),
        );
    }
    if facts.systemd && !facts.delegated {
        return Err(format!(
            "its cgroup {path} is systemd's: set Delegate=yes in the unit to give each \
             generation a cgroup"
        ));
    }
    if let Some(why) = &facts.not_writable {
        return Err(format!(
            "its cgroup {path} cannot be written to ({why}): workers are not given a cgroup per \
             generation"
        ));
    }
    Ok(Delegation {
        dir: dir.clone(),
        path: path.clone(),
        grant: if facts.delegated {
            Grant::Systemd
        } else {
            Grant::Writable
        },
    })
}

impl Delegation {
    /// A cgroup2 directory named explicitly (`path` is what `/proc/PID/cgroup` shows for it).
    #[cfg(test)]
    pub fn at(dir: PathBuf, path: String) -> Delegation {
        Delegation {
            dir,
            path,
            grant: Grant::Writable,
        }
    }
}

/// The cgroup v2 path of /proc/PID/cgroup's text (its `0::` line).
pub fn unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let path = line.strip_prefix("0::")?;
        // A cgroup removed under a process shows " (deleted)".
        Some(path.strip_suffix(" (deleted)").unwrap_or(path).to_string())
    })
}

/// The directory of cgroup `path` in the cgroup2 mounts of /proc/self/mountinfo's text:
/// `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid) first, then any other.
pub fn cgroup2_dir(mountinfo: &str, path: &str) -> Option<PathBuf> {
    let mut found: Vec<(u8, PathBuf)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        if after.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = before.split_whitespace().collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let (root, point) = (unescape_mount(root), unescape_mount(point));
        // A mount of part of the hierarchy shows only what is below its root.
        let relative = if root == "/" {
            path
        } else if path == root {
            ""
        } else if let Some(rest) = path.strip_prefix(root.as_str())
            && rest.starts_with('/')
        {
            rest
        } else {
            continue;
        };
        let rank = match point.as_str() {
            "/sys/fs/cgroup" => 0,
            "/sys/fs/cgroup/unified" => 1,
            _ => 2,
        };
        let relative = relative.trim_start_matches('/');
        let dir = if relative.is_empty() {
            PathBuf::from(&point)
        } else {
            Path::new(&point).join(relative)
        };
        found.push((rank, dir));
    }
    found.sort_by_key(|(rank, _)| *rank);
    found.into_iter().map(|(_, dir)| dir).next()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(is_octal))
            .and_then(|d| {
                let value = u16::from(d[0] - b'0') << 6
                    | u16::from(d[1] - b'0') << 3
                    | u16::from(d[2] - b'0');
                u8::try_from(value).ok()
            });
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn is_octal(byte: &u8) -> bool {
    (b'0'..=b'7').contains(byte)
}

/// systemd's mark of a delegated cgroup: `trusted.delegate` (readable by root), else
/// `user.delegate` (systemd 251+, set also for units with `User=`).
pub(super) fn delegation_mark(dir: &Path) -> bool {
    ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| xattr(dir, name).is_some_and(|value| value == b"1"))
}

pub(super) fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut value = [0u8; 16];
    // SAFETY: both strings are NUL-terminated; the buffer's length is passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    usize::try_from(n).ok().map(|n| value[..n].to_vec())
}

/// Whether the calling process may create cgroups in `dir` and move processes there.
pub(super) fn writable(dir: &Path) -> Result<(), String> {
    for file in [
        dir.to_path_buf(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        let c = CString::new(file.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            return Err(format!(
                "{}: {}",
                file.display(),
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
