//! Whether a generation waits for connections on the sockets start_server passed it, read from
//! /proc with no help from the worker.
//!
//! A generation is its root pids (the workers start_server spawned) and their descendants
//! (`/proc/PID/task/TID/children`, or the ppid of every process where the kernel lacks that
//! file). A process of it listens when:
//! - a thread is blocked in `accept`/`accept4` on a passed socket, or in `recvfrom`/`recvmsg`/
//!   `recvmmsg`/`read` on one (datagram sockets) (`/proc/PID/task/TID/syscall`);
//! - a thread is blocked in `poll`/`ppoll` or `select`/`pselect6` asking for input on one (the
//!   syscall's arguments, then its `pollfd` array or read `fd_set` read with
//!   `process_vm_readv`, kept only if the thread is still in the same call afterwards);
//! - one of its epoll sets holds one with read interest (`/proc/PID/fdinfo/EPFD`, a `tfd:` line
//!   per target with the target file's `ino:`), whether or not a thread waits on that set yet.
//!
//! Sockets are matched by inode (`/proc/PID/fd/N` reads `socket:[INODE]`), never by fd number:
//! a worker may `dup` a passed socket anywhere, and an epoll set may hold the dup. A socket the
//! worker made itself has its own inode and never counts.
//!
//! Anything /proc refuses or no longer has (a process gone, a thread exited, permission) is
//! "not listening yet" for that process, never an error: the next scan looks again.
//!
//! Permissions: `children` lists are readable by anyone. `fd/` and `fdinfo/` need
//! PTRACE_MODE_READ on the process (root, or the same uid and a dumpable process), which Yama
//! does not restrict. `syscall` and `process_vm_readv` need PTRACE_MODE_ATTACH: the same, plus
//! Yama's `ptrace_scope` (1: the scanner must be an ancestor, which start_server is, its orphans
//! included as a child subreaper; 2: CAP_SYS_PTRACE, so root only; 3: no one, root included).
//! Where it is refused, epoll sets are still seen; blocking `accept`/`recv` and `poll`/`select`
//! are not. A process that changed uid (non-dumpable) is readable by root only.
//!
//! Not seen: a wait the kernel restarted after a signal through `restart_syscall` (its arguments
//! are gone; the wait is seen again once the call returns and is made anew), `io_uring`, and a
//! 32-bit process's syscalls (their numbers are another table's).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::fs;
use std::io::IoSliceMut;
use std::sync::OnceLock;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use nix::unistd::Pid;

/// The passed sockets, by inode (every dup and inherited copy of a socket shares its inode).
pub type Inodes = BTreeSet<u64>;

/// At most this many processes of a generation are examined in one scan (about 50 µs each):
/// a fork bomb must not make a scan unbounded.
pub const MAX_PROCESSES: usize = 1024;

/// At most this many threads, all processes together, have their syscall read in one scan
/// (about 10 µs each).
pub const MAX_THREADS: usize = 4096;

/// At most this many `pollfd` entries are read from a `poll` (the rest are not looked at:
/// servers put their listening sockets first).
const MAX_POLLFDS: usize = 4096;

/// At most this many fds of a `select` are read.
const MAX_SELECT_FDS: usize = 65536;

/// How a process waits on a passed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Blocked in `accept` or `accept4` on it.
    Accept,
    /// Blocked in `recvfrom`, `recvmsg`, `recvmmsg` or `read` on it: a datagram socket.
    Receive,
    /// Blocked in `poll` or `ppoll`, asking for input on it.
    Poll,
    /// Blocked in `select` or `pselect6`, with it in the read set.
    Select,
    /// An epoll set (its fd `epfd`) holds it with read interest; `waiting`: a thread is blocked
    /// in `epoll_wait` on that set.
    Epoll {
        /// The epoll set's fd.
        epfd: i32,
        /// Some thread of the process is blocked in `epoll_wait`/`epoll_pwait`/`epoll_pwait2`
        /// on it.
        waiting: bool,
    },
}

/// A process of the generation waiting on a passed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The process.
    pub pid: i32,
    /// Its thread in the blocking call (the process's pid for an epoll set).
    pub tid: i32,
    /// The process's fd for the socket (for epoll: the fd it was added to the set under).
    pub fd: i32,
    /// The passed socket's inode.
    pub inode: u64,
    /// How it waits.
    pub how: How,
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Listening {
            pid, tid, fd, how, ..
        } = *self;
        let thread = if tid == pid {
            String::new()
        } else {
            format!(" (thread {tid})")
        };
        match how {
            How::Accept => write!(f, "pid {pid}{thread} is in accept on fd {fd}"),
            How::Receive => write!(f, "pid {pid}{thread} is receiving on fd {fd}"),
            How::Poll => write!(f, "pid {pid}{thread} polls fd {fd}"),
            How::Select => write!(f, "pid {pid}{thread} selects on fd {fd}"),
            How::Epoll { epfd, waiting } => {
                let waits = if waiting { ", waiting on it" } else { "" };
                write!(f, "pid {pid} has fd {fd} in its epoll set {epfd}{waits}")
            }
        }
    }
}

/// What one scan found, and what it looked at.
// start_server stops at the first finding (`find`); bench/listening_probe surveys.
#[allow(dead_code)]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Every way a process of the generation waits on a passed socket.
    pub listening: Vec<Listening>,
    /// The processes examined: the roots that still exist and their descendants.
    pub processes: usize,
    /// The threads whose syscall was read.
    pub threads: usize,
}

/// The first process found among `roots` and their descendants that waits on one of the
/// `passed` sockets, and how. Stops at the first.
pub fn find(roots: &[i32], passed: &Inodes) -> Option<Listening> {
    let mut found = None;
    scan(roots, passed, &mut |l| {
        found = Some(l);
        false
    });
    found
}

/// Every way the processes among `roots` and their descendants wait on the `passed` sockets.
#[allow(dead_code)]
pub fn survey(roots: &[i32], passed: &Inodes) -> Survey {
    let mut listening = Vec::new();
    let (processes, threads) = scan(roots, passed, &mut |l| {
        listening.push(l);
        true
    });
    Survey {
        listening,
        processes,
        threads,
    }
}

/// Walks the generation, handing each finding to `found` until it returns false; returns how
/// many processes and threads it examined.
fn scan(
    roots: &[i32],
    passed: &Inodes,
    found: &mut dyn FnMut(Listening) -> bool,
) -> (usize, usize) {
    walk(roots, passed, children_files(), found)
}

/// [`scan`], finding children in `children` files or else by every process's ppid.
fn walk(
    roots: &[i32],
    passed: &Inodes,
    children_files: bool,
    found: &mut dyn FnMut(Listening) -> bool,
) -> (usize, usize) {
    if passed.is_empty() {
        return (0, 0);
    }
    let ppids = (!children_files).then(parents);
    let mut seen = BTreeSet::new();
    let mut queue: VecDeque<i32> = roots.iter().copied().filter(|&p| p > 0).collect();
    let (mut examined, mut threads) = (0, 0);
    while let Some(pid) = queue.pop_front() {
        if seen.len() >= MAX_PROCESSES {
            break;
        }
        if !seen.insert(pid) {
            continue;
        }
        let tasks = tasks(pid);
        if tasks.is_empty() {
            // Gone, or not ours to read.
            continue;
        }
        examined += 1;
        // The children lists below are read for every thread; the syscalls within the budget.
        let budget = MAX_THREADS.saturating_sub(threads).min(tasks.len());
        threads += budget;
        if !examine(pid, &tasks[..budget], passed, found) {
            break;
        }
        match &ppids {
            Some(ppids) => queue.extend(ppids.get(&pid).into_iter().flatten()),
            None => {
                for &tid in &tasks {
                    queue.extend(
                        read(&format!("/proc/{pid}/task/{tid}/children"))
                            .map_or_else(Vec::new, |list| parse_pids(&list)),
                    );
                }
            }
        }
    }
    (examined, threads)
}

/// Looks at one process's threads, then its epoll sets; false when `found` asked to stop.
fn examine(
    pid: i32,
    tasks: &[i32],
    passed: &Inodes,
    found: &mut dyn FnMut(Listening) -> bool,
) -> bool {
    // fds some thread is in epoll_wait on.
    let mut epoll_waits = BTreeSet::new();
    for &tid in tasks {
        let Some(line) = read(&format!("/proc/{pid}/task/{tid}/syscall")) else {
            continue;
        };
        let Some(call) = parse_syscall(&line) else {
            continue;
        };
        // Some(whether to go on) when `fd` is a passed socket.
        let mut report = |fd: i32, how: How| -> Option<bool> {
            let inode = socket_inode(&format!("/proc/{pid}/task/{tid}/fd/{fd}"))
                .filter(|i| passed.contains(i))?;
            Some(found(Listening {
                pid,
                tid,
                fd,
                inode,
                how,
            }))
        };
        let go_on = match classify(call.nr) {
            Some(Call::Accept) => report(fd_arg(call.args[0]), How::Accept),
            Some(Call::Receive) => report(fd_arg(call.args[0]), How::Receive),
            Some(Call::EpollWait) => {
                epoll_waits.insert(fd_arg(call.args[0]));
                None
            }
            Some(Call::Poll) => {
                let fds = polled_fds(pid, tid, &line, &call);
                fds.into_iter().find_map(|fd| report(fd, How::Poll))
            }
            Some(Call::Select) => {
                let fds = selected_fds(pid, tid, &line, &call);
                fds.into_iter().find_map(|fd| report(fd, How::Select))
            }
            None => None,
        };
        if go_on == Some(false) {
            return false;
        }
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    for entry in fds.flatten() {
        let Some(epfd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let is_epoll = fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]");
        if !is_epoll {
            continue;
        }
        let Some(info) = read(&format!("/proc/{pid}/fdinfo/{epfd}")) else {
            continue;
        };
        for target in parse_epoll_targets(&info) {
            if target.events & READ_INTEREST == 0 || !passed.contains(&target.inode) {
                continue;
            }
            let how = How::Epoll {
                epfd,
                waiting: epoll_waits.contains(&epfd),
            };
            if !found(Listening {
                pid,
                tid: pid,
                fd: target.fd,
                inode: target.inode,
                how,
            }) {
                return false;
            }
        }
    }
    true
}

/// `EPOLLIN | EPOLLRDNORM`, and the same bits of `POLLIN | POLLRDNORM`.
const READ_INTEREST: u32 = 0x001 | 0x040;

/// The calls a waiting worker is seen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Accept,
    Receive,
    Poll,
    Select,
    EpollWait,
}

/// What the syscall number means on this architecture (the numbers differ between x86_64 and
/// aarch64; libc has each one's).
fn classify(nr: libc::c_long) -> Option<Call> {
    match nr {
        libc::SYS_accept | libc::SYS_accept4 => Some(Call::Accept),
        libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_recvmmsg | libc::SYS_read => {
            Some(Call::Receive)
        }
        libc::SYS_ppoll => Some(Call::Poll),
        libc::SYS_pselect6 => Some(Call::Select),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => Some(Call::EpollWait),
        _ => classify_legacy(nr),
    }
}

/// The older calls x86_64 still has (aarch64 has only their successors).
#[cfg(target_arch = "x86_64")]
fn classify_legacy(nr: libc::c_long) -> Option<Call> {
    match nr {
        libc::SYS_poll => Some(Call::Poll),
        libc::SYS_select => Some(Call::Select),
        libc::SYS_epoll_wait => Some(Call::EpollWait),
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn classify_legacy(_nr: libc::c_long) -> Option<Call> {
    None
}

/// A thread's blocking syscall: its number and arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Syscall {
    nr: libc::c_long,
    args: [u64; 6],
}

/// `/proc/PID/task/TID/syscall`: `NR ARG1 … ARG6 SP PC` (hex arguments) while blocked in a
/// syscall; `running`, or `-1 SP PC` outside one, are None.
fn parse_syscall(line: &str) -> Option<Syscall> {
    let mut words = line.split_whitespace();
    let nr: libc::c_long = words.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        let word = words.next()?;
        *arg = u64::from_str_radix(word.strip_prefix("0x")?, 16).ok()?;
    }
    Some(Syscall { nr, args })
}

/// An fd argument: the low 32 bits of the register, as the kernel reads an `int`.
fn fd_arg(arg: u64) -> i32 {
    arg as u32 as i32
}

/// The fds a thread in `poll`/`ppoll` asks input for: its `pollfd` array, read from its memory
/// while it is provably still in that call.
fn polled_fds(pid: i32, tid: i32, line: &str, call: &Syscall) -> Vec<i32> {
    let [address, count, ..] = call.args;
    let count = usize::try_from(count).map_or(MAX_POLLFDS, |c| c.min(MAX_POLLFDS));
    let Some(bytes) = read_memory(pid, tid, line, address, count * 8) else {
        return Vec::new();
    };
    parse_pollfds(&bytes)
}

/// `struct pollfd { int fd; short events; short revents; }`, native byte order: the fds with
/// input asked for.
fn parse_pollfds(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(8)
        .filter_map(|entry| {
            let fd = i32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let events = u16::from_ne_bytes([entry[4], entry[5]]);
            (fd >= 0 && u32::from(events) & READ_INTEREST != 0).then_some(fd)
        })
        .collect()
}

/// The fds in the read set of a thread in `select`/`pselect6`.
fn selected_fds(pid: i32, tid: i32, line: &str, call: &Syscall) -> Vec<i32> {
    let [nfds, readfds, ..] = call.args;
    let nfds = usize::try_from(nfds).map_or(MAX_SELECT_FDS, |n| n.min(MAX_SELECT_FDS));
    let word = std::mem::size_of::<libc::c_ulong>();
    let bytes = nfds.div_ceil(word * 8) * word;
    let Some(set) = read_memory(pid, tid, line, readfds, bytes) else {
        return Vec::new();
    };
    parse_fd_set(&set, nfds)
}

/// An `fd_set`: an array of `unsigned long`, fd N at bit N % bits of word N / bits.
fn parse_fd_set(set: &[u8], nfds: usize) -> Vec<i32> {
    let word = std::mem::size_of::<libc::c_ulong>();
    let bits = word * 8;
    let mut fds = Vec::new();
    for (index, chunk) in set.chunks_exact(word).enumerate() {
        // A c_ulong in native order, widened to u64.
        let mut buf = [0u8; 8];
        let value = if cfg!(target_endian = "little") {
            buf[..word].copy_from_slice(chunk);
            u64::from_le_bytes(buf)
        } else {
            buf[8 - word..].copy_from_slice(chunk);
            u64::from_be_bytes(buf)
        };
        for bit in 0..bits {
            let fd = index * bits + bit;
            if fd < nfds && value & (1 << bit) != 0 {
                fds.extend(i32::try_from(fd).ok());
            }
        }
    }
    fds
}

/// `len` bytes at `address` in the thread's memory, if it is still in the call `line` showed
/// once they are read (else they may be another call's).
fn read_memory(pid: i32, tid: i32, line: &str, address: u64, len: usize) -> Option<Vec<u8>> {
    if address == 0 || len == 0 {
        return None;
    }
    let mut buffer = vec![0u8; len];
    let remote = [RemoteIoVec {
        base: usize::try_from(address).ok()?,
        len,
    }];
    let copied = process_vm_readv(
        Pid::from_raw(pid),
        &mut [IoSliceMut::new(&mut buffer)],
        &remote,
    )
    .ok()?;
    let still = read(&format!("/proc/{pid}/task/{tid}/syscall"))?;
    (copied == len && still == line).then_some(buffer)
}

/// One target of an epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EpollTarget {
    fd: i32,
    events: u32,
    inode: u64,
}

/// The targets in an epoll fd's `/proc/PID/fdinfo/N`: one line each,
/// `tfd:        5 events:       19 data: 5  pos:0 ino:2a1c sdev:8` (events and ino in hex).
fn parse_epoll_targets(info: &str) -> Vec<EpollTarget> {
    info.lines()
        .filter(|line| line.starts_with("tfd:"))
        .filter_map(|line| {
            let fields = fields(line);
            let value = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            Some(EpollTarget {
                fd: value("tfd")?.parse().ok()?,
                events: u32::from_str_radix(value("events")?, 16).ok()?,
                inode: u64::from_str_radix(value("ino")?, 16).ok()?,
            })
        })
        .collect()
}

/// `key: value` and `key:value` pairs of an fdinfo line.
fn fields(line: &str) -> Vec<(&str, &str)> {
    let mut pairs = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        let Some((key, value)) = word.split_once(':') else {
            continue;
        };
        if value.is_empty() {
            if let Some(next) = words.next() {
                pairs.push((key, next));
            }
        } else {
            pairs.push((key, value));
        }
    }
    pairs
}

/// The inode of the socket an fd link names (`socket:[INODE]`); None for anything else.
fn socket_inode(link: &str) -> Option<u64> {
    let target = fs::read_link(link).ok()?;
    parse_socket_link(target.to_str()?)
}

fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A whitespace-separated list of pids (`/proc/PID/task/TID/children`).
fn parse_pids(list: &str) -> Vec<i32> {
    list.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &i32| p > 0)
        .collect()
}

/// The threads of a process; empty when it is gone or not ours to read.
fn tasks(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The main thread first: it is where single-threaded servers wait.
    tids.sort_unstable_by_key(|&t| (t != pid, t));
    tids
}

/// Whether the kernel has `/proc/PID/task/TID/children` (CONFIG_PROC_CHILDREN).
fn children_files() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let me = std::process::id();
        fs::metadata(format!("/proc/{me}/task/{me}/children")).is_ok()
    })
}

/// Every process's children, from the ppid in each `/proc/PID/stat` (where the kernel has no
/// children files).
fn parents() -> BTreeMap<i32, Vec<i32>> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = read(&format!("/proc/{pid}/stat")).and_then(|s| parse_stat_ppid(&s)) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

/// The ppid in `/proc/PID/stat`: `PID (COMM) STATE PPID …`, where COMM may hold spaces and
/// parentheses (so the last `)` ends it).
fn parse_stat_ppid(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A /proc file's text; None when it cannot be read (gone, refused).
fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests;
