//! A cgroup v2 subtree of start_server's own: its delegated cgroup becomes an inner node holding
//! `supervisor` (start_server itself: cgroup v2 allows no processes in an inner node that
//! distributes resources), `gen-N` per generation and, with several copies, `gen-N/slot-K`.
//!
//! ```text
//! <delegated>/            what systemd (Delegate=yes) or the container gave start_server
//!   supervisor/           start_server (and whatever ran in the delegated cgroup before)
//!   gen-3/                a generation with one copy: its worker and all it starts
//!   gen-4/slot-0/ slot-1/ a generation with copies: one cgroup each
//!   .control/             systemd's, for ExecReload= and the like: never touched here
//! ```
//!
//! A worker joins its cgroup before exec, so everything it starts is there whatever it does to
//! its environment, session or process group: either it is created there ([`fork_into`],
//! `clone3(CLONE_INTO_CGROUP)`, Linux 5.7+), or the child of a plain fork writes `0` to the
//! target's `cgroup.procs` ([`join`], with a descriptor opened before the fork). A generation
//! ends with `cgroup.kill` (Linux 5.14+; before it, SIGKILL to every member until none is left)
//! and its empty cgroups are removed bottom-up.
//!
//! Whether start_server may do this is decided once, by [`detect()`]: systemd's delegation mark on
//! its cgroup, or (without systemd) a writable cgroup of its own that is not the hierarchy's root.
//! Everything else (cgroup v1, a read-only or foreign tree, systemd without `Delegate=yes`) is a
//! reason to say once and work without cgroups.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The controllers enabled for generations and slots when they are delegated. `memory` gives
/// `memory.current`; `cpu` is left out on purpose (`cpu.stat`'s `usage_usec` needs no controller,
/// and enabling it would share CPU between generations and slots by weight instead of between
/// processes, which changes how a loaded machine schedules workers); `pids` would be read by
/// nobody.
pub const CONTROLLERS: &[&str] = &["memory"];

pub use detect::*;

mod detect;
pub mod tree;

impl Delegation {
    /// The delegated cgroup itself.
    pub fn cgroup(&self) -> Cgroup {
        Cgroup {
            dir: self.dir.clone(),
            path: self.path.clone(),
        }
    }
}

/// start_server's subtree, set up.
#[derive(Debug)]
pub struct Subtree {
    root: Cgroup,
    controllers: Vec<String>,
}

/// One cgroup: a generation's, a slot's, or the delegated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dir: PathBuf,
    path: String,
}

impl Subtree {
    /// Moves start_server (and every other process of the delegated cgroup: they would make it
    /// an inner node with processes) into [`SUPERVISOR`], and enables the [`CONTROLLERS`] that
    /// are delegated. A controller that cannot be enabled is left out (see
    /// [`Subtree::controllers`]); not being able to move is an error.
    pub fn set_up(delegation: &Delegation) -> io::Result<Subtree> {
        let root = delegation.cgroup();
        let supervisor = root.child(SUPERVISOR)?;
        write_file(&supervisor.dir.join("cgroup.procs"), b"0")?;
        // Each process moves on its own: one that exited in between is no error.
        for pid in root.pids_here()? {
            match write_file(
                &supervisor.dir.join("cgroup.procs"),
                pid.to_string().as_bytes(),
            ) {
                Err(e) if errno_of(&e) == Some(libc::ESRCH) => {}
                other => other?,
            }
        }
        let controllers = enable_controllers(&root.dir);
        Ok(Subtree { root, controllers })
    }

    /// The subtree an earlier image of start_server set up (an upgrade in place hands over
    /// [`Subtree::root`]'s directory and path): reads which controllers are enabled.
    pub fn adopt(dir: PathBuf, path: String) -> io::Result<Subtree> {
        let text = read_file(&dir.join("cgroup.subtree_control"))?;
        let controllers = text
            .split_whitespace()
            .filter(|c| CONTROLLERS.contains(c))
            .map(str::to_string)
            .collect();
        Ok(Subtree {
            root: Cgroup { dir, path },
            controllers,
        })
    }

    /// The delegated cgroup.
    pub fn root(&self) -> &Cgroup {
        &self.root
    }

    /// The controllers enabled for generations (a subset of [`CONTROLLERS`]).
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// `gen-N`, created if missing. With `slots`, it is made an inner node: the enabled
    /// controllers are passed on to its slots (`gen-N/slot-K`), and no process may be put in it
    /// directly.
    pub fn generation(&self, generation: u64, slots: bool) -> io::Result<Cgroup> {
        let cgroup = self.root.child(&format!("gen-{generation}"))?;
        if slots {
            for controller in &self.controllers {
                write_file(
                    &cgroup.dir.join("cgroup.subtree_control"),
                    format!("+{controller}").as_bytes(),
                )?;
            }
        }
        Ok(cgroup)
    }

    /// The `gen-N` cgroups there are, by generation: after an upgrade in place, or left over.
    pub fn generations(&self) -> io::Result<Vec<(u64, Cgroup)>> {
        let mut found = Vec::new();
        for (name, cgroup) in self.root.children()? {
            if let Some(n) = name.strip_prefix("gen-").and_then(|n| n.parse().ok()) {
                found.push((n, cgroup));
            }
        }
        found.sort_by_key(|(n, _)| *n);
        Ok(found)
    }
}

/// What [`Cgroup::kill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// `cgroup.kill`: the kernel kills every process of the subtree, also those forked
    /// meanwhile. Wait for [`Cgroup::populated`] to turn false.
    Kernel,
    /// No `cgroup.kill`: this many processes were sent SIGKILL. Call again until it is 0 (a
    /// process may have forked in between).
    Signalled(usize),
}

/// What a cgroup holds and has used, read on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// `cpu.stat`'s `usage_usec`: CPU time of every process that ever ran in it, microseconds.
    pub cpu_usec: u64,
    /// `memory.current`, where the memory controller is enabled for it.
    pub memory_bytes: Option<u64>,
    /// Processes in it and below.
    pub processes: usize,
}

impl Cgroup {
    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its path as `/proc/PID/cgroup` shows it (what status reports).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A child cgroup, created if missing.
    pub fn child(&self, name: &str) -> io::Result<Cgroup> {
        let dir = self.dir.join(name);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                return Err(context(e, "cannot create cgroup", &dir));
            }
            _ => {}
        }
        let path = if self.path.ends_with('/') {
            format!("{}{name}", self.path)
        } else {
            format!("{}/{name}", self.path)
        };
        Ok(Cgroup { dir, path })
    }

    /// The child cgroups, by name.
    pub fn children(&self) -> io::Result<Vec<(String, Cgroup)>> {
        let mut children = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| context(e, "cannot list", &self.dir))?;
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = format!("{}/{name}", self.path.trim_end_matches('/'));
            children.push((
                name,
                Cgroup {
                    dir: entry.path(),
                    path,
                },
            ));
        }
        Ok(children)
    }

    /// A close-on-exec descriptor of its `cgroup.procs` for a child of fork to [`join`].
    pub fn procs_fd(&self) -> io::Result<OwnedFd> {
        open(
            &self.dir.join("cgroup.procs"),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    }

    /// A close-on-exec descriptor of its directory for [`fork_into`].
    pub fn dir_fd(&self) -> io::Result<OwnedFd> {
        open(
            &self.dir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    }

    /// The processes directly in it.
    pub fn pids_here(&self) -> io::Result<Vec<i32>> {
        Ok(parse_pids(&read_file(&self.dir.join("cgroup.procs"))?))
    }

    /// The processes in it and below: its members. systemd's `.control` is not below a
    /// generation, so this is exact for one.
    pub fn pids(&self) -> io::Result<Vec<i32>> {
        let mut pids = self.pids_here()?;
        for (_, child) in self.children()? {
            match child.pids() {
                Ok(more) => pids.extend(more),
                // Removed meanwhile.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pids)
    }

    /// Whether any process is in it or below (`cgroup.events`; start_server can watch that
    /// file with inotify, IN_MODIFY, to learn when it empties).
    pub fn populated(&self) -> io::Result<bool> {
        let events = read_file(&self.dir.join("cgroup.events"))?;
        let populated = events.lines().find_map(|l| l.strip_prefix("populated "));
        match populated {
            Some(value) => Ok(value.trim() != "0"),
            None => Ok(!self.pids()?.is_empty()),
        }
    }

    /// Kills every process in it and below: with `cgroup.kill`, else one round of
    /// [`Cgroup::kill_by_signal`].
    pub fn kill(&self) -> io::Result<Killed> {
        match write_file(&self.dir.join("cgroup.kill"), b"1") {
            Ok(()) => Ok(Killed::Kernel),
            Err(e) if errno_of(&e) == Some(libc::ENOENT) => {
                self.kill_by_signal().map(Killed::Signalled)
            }
            Err(e) => Err(e),
        }
    }

    /// SIGKILL to every member (before Linux 5.14, no `cgroup.kill`): one round; returns how
    /// many were signalled. The cgroup is frozen first where it can be (Linux 5.2+), so that
    /// nothing forks between reading the members and killing them.
    pub fn kill_by_signal(&self) -> io::Result<usize> {
        // A frozen process still dies of SIGKILL.
        let _ = write_file(&self.dir.join("cgroup.freeze"), b"1");
        let pids = self.pids()?;
        let mut signalled = 0;
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid comes from the
            // cgroup, and a pid in cgroup.procs is a live process in it (not reaped).
            if pid > 0 && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                signalled += 1;
            }
        }
        Ok(signalled)
    }

    /// Removes it and every cgroup below, bottom-up; each must be empty (EBUSY otherwise).
    /// A cgroup already gone is no error.
    pub fn remove(&self) -> io::Result<()> {
        match self.children() {
            Ok(children) => {
                for (_, child) in children {
                    child.remove()?;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        match fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(context(e, "cannot remove cgroup", &self.dir))
            }
            _ => Ok(()),
        }
    }

    /// CPU time, memory and processes, read now.
    pub fn stats(&self) -> io::Result<Stats> {
        let cpu = read_file(&self.dir.join("cpu.stat"))?;
        let cpu_usec = cpu_usage_usec(&cpu).ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("{}/cpu.stat has no usage_usec", self.dir.display()),
            )
        })?;
        let memory_bytes = match fs::read_to_string(self.dir.join("memory.current")) {
            Ok(text) => text.trim().parse().ok(),
            Err(_) => None,
        };
        Ok(Stats {
            cpu_usec,
            memory_bytes,
            processes: self.pids()?.len(),
        })
    }
}

/// `usage_usec` of a `cpu.stat`.
pub fn cpu_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("usage_usec"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Enables each of [`CONTROLLERS`] that `dir` offers (its `cgroup.controllers`) for its
/// children; returns those that could be.
fn enable_controllers(dir: &Path) -> Vec<String> {
    let offered = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut enabled = Vec::new();
    for controller in CONTROLLERS {
        if offered.split_whitespace().any(|c| c == *controller)
            && write_file(
                &dir.join("cgroup.subtree_control"),
                format!("+{controller}").as_bytes(),
            )
            .is_ok()
        {
            enabled.push(controller.to_string());
        }
    }
    enabled
}

/// Makes the calling process (a child of fork, before exec) a member of the cgroup whose
/// `cgroup.procs` is open as `procs` ([`Cgroup::procs_fd`]). Returns the errno on failure.
/// Async-signal-safe: one write(2).
///
/// # Safety
///
/// `procs` must be an open descriptor (the child's copy of one made by [`Cgroup::procs_fd`]).
pub unsafe fn join(procs: RawFd) -> Result<(), i32> {
    // SAFETY: a write of one byte from a static buffer to a descriptor the caller vouches for;
    // the errno location is valid in any thread.
    unsafe {
        if libc::write(procs, b"0".as_ptr().cast(), 1) == 1 {
            Ok(())
        } else {
            Err(*libc::__errno_location())
        }
    }
}

/// The kernel's `struct clone_args` (linux/sched.h), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2), but the child starts as a member of the cgroup whose directory is open as `dir`
/// ([`Cgroup::dir_fd`]): `clone3(CLONE_INTO_CGROUP)`, Linux 5.7+. Returns 0 in the child, its
/// pid in the parent. ENOSYS (older kernel, or a seccomp filter that refuses clone3), EBUSY
/// (the cgroup is an inner node) or EPERM: fall back to fork and [`join`].
///
/// # Safety
///
/// As for fork(2): the calling process must be single-threaded, or the child must make only
/// async-signal-safe calls until it execs or `_exit`s. glibc's fork handlers do not run.
pub unsafe fn fork_into(dir: RawFd) -> io::Result<i32> {
    let Ok(cgroup) = u64::try_from(dir) else {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    };
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with no stack (the child runs on a copy of this one, like fork) and no
    // pointers but `args`, valid for its size; the caller takes fork's obligations.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// The cgroup v2 path of process `pid` (its /proc/PID/cgroup), if it lives.
pub fn cgroup_of(pid: i32) -> Option<String> {
    unified_path(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

fn open(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "path with a NUL byte"))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(context(io::Error::last_os_error(), "cannot open", path));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    debug_assert!(fd.as_raw_fd() >= 0);
    Ok(fd)
}

fn read_file(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| context(e, "cannot read", path))
}

/// One write(2) of the whole value: cgroup files take one value per write.
fn write_file(path: &Path, value: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| context(e, "cannot open", path))?;
    file.write_all(value).map_err(|e| {
        context(
            e,
            &format!("cannot write {:?} to", OsStr::from_bytes(value)),
            path,
        )
    })
}

/// The error with what was being done and where, keeping its errno.
fn context(error: io::Error, doing: &str, path: &Path) -> io::Error {
    match error.raw_os_error() {
        Some(errno) => {
            let described = io::Error::from_raw_os_error(errno);
            io::Error::new(
                described.kind(),
                CgroupError {
                    message: format!("{doing} {}: {described}", path.display()),
                    errno,
                },
            )
        }
        None => io::Error::new(error.kind(), format!("{doing} {}: {error}", path.display())),
    }
}

/// An OS error with what was being done; [`errno_of`] finds its errno again.
#[derive(Debug)]
struct CgroupError {
    message: String,
    errno: i32,
}

impl std::fmt::Display for CgroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CgroupError {}

/// The errno of an error from this module (also inside the context it adds).
pub fn errno_of(error: &io::Error) -> Option<i32> {
    error.raw_os_error().or_else(|| {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<CgroupError>())
            .map(|e| e.errno)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `sleep` in `cgroup`, by clone3 or by fork and the child's join; its pid.
    fn sleeper_in(cgroup: &Cgroup, clone3: bool) -> i32 {
        let argv = [c"/bin/sleep".as_ptr(), c"600".as_ptr(), std::ptr::null()];
        let dir = cgroup.dir_fd().unwrap();
        let procs = cgroup.procs_fd().unwrap();
        // SAFETY: the child only joins, execs or _exits (async-signal-safe), on data prepared
        // above.
        let pid = unsafe {
            if clone3 {
                fork_into(dir.as_raw_fd()).unwrap()
            } else {
                libc::fork()
            }
        };
        if pid == 0 {
            // SAFETY: in the child: write, execv and _exit only.
            unsafe {
                if !clone3 && join(procs.as_raw_fd()).is_err() {
                    libc::_exit(121);
                }
                libc::execv(argv[0], argv.as_ptr());
                libc::_exit(122)
            }
        }
        assert!(pid > 0);
        pid
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed().as_secs() < 30, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// On the real cgroup2 hierarchy, below the test's own cgroup (as root, which runs the
    /// tests): members created in place (clone3) or joining after fork, killed by SIGKILL to
    /// each (kernels before `cgroup.kill`) and by `cgroup.kill`, then removed bottom-up.
    #[test]
    fn members_made_in_place_are_killed_and_their_cgroups_removed() {
        let facts = gather();
        let (Some(path), Some(dir)) = (facts.path, facts.mount) else {
            panic!("this test needs a cgroup2 hierarchy (cgroup v2, or hybrid mounts)")
        };
        let scratch = Delegation::at(dir, path)
            .cgroup()
            .child(&format!("ss-unit-{}", std::process::id()))
            .unwrap_or_else(|e| panic!("this test makes a cgroup below its own, as root: {e}"));
        let (a, b) = (scratch.child("a").unwrap(), scratch.child("b").unwrap());
        let first = sleeper_in(&a, true);
        let second = sleeper_in(&b, false);
        assert_eq!(cgroup_of(first).as_deref(), Some(a.path()), "created there");
        wait_for("the forked child to join b", || {
            cgroup_of(second).as_deref() == Some(b.path())
        });
        let mut all = scratch.pids().unwrap();
        all.sort_unstable();
        assert_eq!(all, {
            let mut both = vec![first, second];
            both.sort_unstable();
            both
        });
        assert!(scratch.pids_here().unwrap().is_empty());
        let mut signalled = 0;
        wait_for("a's member killed by a signal", || {
            signalled += a.kill_by_signal().unwrap();
            !a.populated().unwrap()
        });
        assert_eq!(signalled, 1);
        assert_eq!(
            b.kill().unwrap(),
            Killed::Kernel,
            "cgroup.kill (Linux 5.14+)"
        );
        wait_for("b empty", || !b.populated().unwrap());
        for pid in [first, second] {
            // SAFETY: waitpid on this test's own children.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        scratch.remove().unwrap();
        assert!(!scratch.dir().exists());
    }

    #[test]
    fn unified_path_of_proc_cgroup() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/system.slice/a.service\n";
        assert_eq!(
            unified_path(hybrid).as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(
            unified_path("0::/gone (deleted)\n").as_deref(),
            Some("/gone")
        );
        assert_eq!(unified_path("4:memory:/x\n1:cpu:/\n"), None);
    }

    #[test]
    fn cgroup2_mount_unified_first_then_hybrid_then_others() {
        let unified = "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n\
                       31 24 0:27 / /mnt/cg\\040two rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_dir(unified, "/system.slice/a.service"),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/a.service"))
        );
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_dir(hybrid, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let elsewhere = "31 24 0:27 / /mnt/cg\\040two\\777 rw - cgroup2 none rw\n";
        assert_eq!(
            cgroup2_dir(elsewhere, "/a"),
            Some(PathBuf::from("/mnt/cg two\\777/a"))
        );
        // A mount of part of the hierarchy shows only what is below its root.
        let part = "40 24 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_dir(part, "/docker/abc/app"),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        assert_eq!(
            cgroup2_dir(part, "/docker/abc"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_dir(part, "/docker/abcdef"), None);
        assert_eq!(cgroup2_dir("garbage\n", "/a"), None);
    }

    #[test]
    fn cpu_stat_usage() {
        let text = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n\
                    nr_periods 0\n";
        assert_eq!(cpu_usage_usec(text), Some(1234567));
        assert_eq!(cpu_usage_usec("user_usec 5\n"), None);
        assert_eq!(cpu_usage_usec("usage_usec x\n"), None);
    }

    fn facts() -> Facts {
        Facts {
            path: Some("/system.slice/app.service".into()),
            mount: Some("/sys/fs/cgroup/system.slice/app.service".into()),
            hierarchy_root: false,
            delegated: true,
            systemd: true,
            not_writable: None,
        }
    }

    #[test]
    fn decisions() {
        let ok = decide(&facts()).unwrap();
        assert_eq!(ok.grant, Grant::Systemd);
        assert_eq!(ok.path, "/system.slice/app.service");
        assert_eq!(ok.dir, Path::new("/sys/fs/cgroup/system.slice/app.service"));

        let refused = |f: Facts| decide(&f).unwrap_err();
        assert!(
            refused(Facts {
                path: None,
                ..facts()
            })
            .starts_with("no cgroup v2")
        );
        assert!(
            refused(Facts {
                mount: None,
                ..facts()
            })
            .contains("mount cgroup2")
        );
        assert!(
            refused(Facts {
                path: Some("/../x".into()),
                ..facts()
            })
            .contains("outside its cgroup namespace")
        );
        let root = refused(Facts {
            hierarchy_root: true,
            ..facts()
        });
        assert!(root.contains("root cgroup"), "{root}");
        let systemds = refused(Facts {
            delegated: false,
            ..facts()
        });
        assert_eq!(
            systemds,
            "its cgroup /system.slice/app.service is systemd's: set Delegate=yes in the unit to \
             give each generation a cgroup"
        );
        let read_only = Facts {
            not_writable: Some("/sys/fs/cgroup: Read-only file system (os error 30)".into()),
            ..facts()
        };
        assert!(refused(read_only).contains("Read-only file system"));

        // Without systemd (a container's own cgroup, say): writable is enough.
        let plain = decide(&Facts {
            delegated: false,
            systemd: false,
            ..facts()
        })
        .unwrap();
        assert_eq!(plain.grant, Grant::Writable);
    }
}
