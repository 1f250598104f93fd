//! The parsers on /proc's formats, then real processes (python3 workers given a socket at fd 3,
//! as start_server gives it) waiting in each way, and some that must not count.

use super::*;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---- Parsing ----

#[test]
fn syscall_lines() {
    assert_eq!(parse_syscall("running\n"), None);
    assert_eq!(parse_syscall("-1 0x7ffd91d89230 0x7f1985292aec\n"), None);
    assert_eq!(
        parse_syscall("288 0x3 0x0 0x0 0x80000 0x0 0x0 0x7ffc5d1e0a18 0x7f3b0e91e8a7\n"),
        Some(Syscall {
            nr: 288,
            args: [3, 0, 0, 0x80000, 0, 0]
        })
    );
    // Too few arguments, or not hex: not a syscall line.
    assert_eq!(parse_syscall("43 0x3 0x0\n"), None);
    assert_eq!(parse_syscall("43 3 0 0 0 0 0 0 0\n"), None);
    assert_eq!(parse_syscall(""), None);
    // An int argument is the register's low 32 bits.
    assert_eq!(fd_arg(0xffff_ffff), -1);
    assert_eq!(fd_arg(0x1_0000_0005), 5);
}

#[test]
fn syscall_numbers_of_this_architecture() {
    assert_eq!(classify(libc::SYS_accept), Some(Call::Accept));
    assert_eq!(classify(libc::SYS_accept4), Some(Call::Accept));
    assert_eq!(classify(libc::SYS_recvfrom), Some(Call::Receive));
    assert_eq!(classify(libc::SYS_recvmsg), Some(Call::Receive));
    assert_eq!(classify(libc::SYS_recvmmsg), Some(Call::Receive));
    assert_eq!(classify(libc::SYS_ppoll), Some(Call::Poll));
    assert_eq!(classify(libc::SYS_pselect6), Some(Call::Select));
    assert_eq!(classify(libc::SYS_epoll_pwait), Some(Call::EpollWait));
    assert_eq!(classify(libc::SYS_wait4), None);
    assert_eq!(classify(libc::SYS_clock_nanosleep), None);
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(classify(43), Some(Call::Accept));
        assert_eq!(classify(288), Some(Call::Accept));
        assert_eq!(classify(7), Some(Call::Poll));
        assert_eq!(classify(23), Some(Call::Select));
        assert_eq!(classify(232), Some(Call::EpollWait));
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(classify(202), Some(Call::Accept));
        assert_eq!(classify(242), Some(Call::Accept));
        assert_eq!(classify(73), Some(Call::Poll));
        assert_eq!(classify(22), Some(Call::EpollWait));
    }
}

#[test]
fn epoll_fdinfo() {
    // As Linux 6 writes it: the epoll file's own lines, then one line per target.
    let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n\
                tfd:        4 events: 1000001d data:     7fb300000004  pos:0 ino:85c8 sdev:9\n\
                tfd:        5 events:       19 data:     7fb300000005  pos:0 ino:85c7 sdev:9\n";
    assert_eq!(
        parse_epoll_targets(info),
        vec![
            EpollTarget {
                fd: 4,
                events: 0x1000_001d,
                inode: 0x85c8
            },
            EpollTarget {
                fd: 5,
                events: 0x19,
                inode: 0x85c7
            },
        ]
    );
    // Older kernels: no ino (nothing to match by, so nothing).
    assert_eq!(
        parse_epoll_targets("tfd:        5 events:       19 data: 5\n"),
        vec![]
    );
    assert_eq!(parse_epoll_targets("pos:\t0\nflags:\t02\n"), vec![]);
}

#[test]
fn children_and_stat() {
    assert_eq!(parse_pids("1234 1240 \n"), vec![1234, 1240]);
    assert_eq!(parse_pids(""), Vec::<i32>::new());
    assert_eq!(parse_pids("0 -3 x 7"), vec![7]);
    assert_eq!(
        parse_stat_ppid("4242 (a) b (c)) S 17 4242 4242 0 -1 4194560"),
        Some(17)
    );
    assert_eq!(parse_stat_ppid("4242 (worker"), None);
}

#[test]
fn fd_links() {
    assert_eq!(parse_socket_link("socket:[34247]"), Some(34247));
    assert_eq!(parse_socket_link("pipe:[34247]"), None);
    assert_eq!(parse_socket_link("anon_inode:[eventpoll]"), None);
    assert_eq!(parse_socket_link("socket:[x]"), None);
    assert_eq!(parse_socket_link("/dev/null"), None);
}

#[test]
fn pollfd_arrays() {
    let entry = |fd: i32, events: u16| {
        let mut bytes = fd.to_ne_bytes().to_vec();
        bytes.extend(events.to_ne_bytes());
        bytes.extend(0u16.to_ne_bytes());
        bytes
    };
    let bytes: Vec<u8> = [
        entry(3, 0x001),  // POLLIN
        entry(4, 0x004),  // POLLOUT only
        entry(-1, 0x001), // ignored by the kernel
        entry(9, 0x040),  // POLLRDNORM
    ]
    .concat();
    assert_eq!(parse_pollfds(&bytes), vec![3, 9]);
}

#[test]
fn fd_sets() {
    let word = std::mem::size_of::<libc::c_ulong>();
    let mut set = vec![0u8; 2 * word];
    let mut mark = |fd: usize| {
        let bits = word * 8;
        let mut value = libc::c_ulong::from_ne_bytes(
            set[fd / bits * word..][..word].try_into().expect("a word"),
        );
        value |= 1 << (fd % bits);
        set[fd / bits * word..][..word].copy_from_slice(&value.to_ne_bytes());
    };
    mark(3);
    mark(word * 8 + 2);
    let high = word * 8 + 2;
    assert_eq!(parse_fd_set(&set, high + 1), vec![3, high as i32]);
    // Bits at or past nfds are not asked for.
    assert_eq!(parse_fd_set(&set, high), vec![3]);
}

// ---- Real processes ----

const PATIENCE: Duration = Duration::from_secs(30);

/// Debian's python3 (what .ci/run installs), reachable by any user.
const PYTHON: &str = "/usr/bin/python3";

/// A worker in its own process group, killed with all it started when dropped.
struct Worker(Child);

impl Worker {
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let pid = self.pid();
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Runs `program` with `passed` at fd 3, as start_server passes a socket.
fn spawn(program: &str, args: &[&str], passed: RawFd) -> Worker {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (dup2, fcntl, setpgid) on values copied into it.
    unsafe {
        command.pre_exec(move || {
            let placed = if passed == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(passed, 3)
            };
            if placed < 0 || libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Worker(command.spawn().expect("spawn a test worker"))
}

fn python(script: &str, passed: RawFd) -> Worker {
    spawn(PYTHON, &["-c", script], passed)
}

/// The inode of one of our own fds.
fn inode(fd: RawFd) -> Inodes {
    let link = fs::read_link(format!("/proc/self/fd/{fd}")).expect("our own fd");
    let inode = parse_socket_link(link.to_str().expect("a socket link")).expect("a socket");
    Inodes::from([inode])
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Waits until `check` says something, for a generous while.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(start.elapsed() < PATIENCE, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `pid` is found listening, and returns how.
fn listening(pid: i32, passed: &Inodes) -> Listening {
    wait_for("the worker to listen", || find(&[pid], passed))
}

/// Whether some thread of `pid` is blocked in one of the syscalls `nrs`.
fn in_syscall(pid: i32, nrs: &[libc::c_long]) -> bool {
    tasks(pid).iter().any(|tid| {
        read(&format!("/proc/{pid}/task/{tid}/syscall"))
            .and_then(|line| parse_syscall(&line))
            .is_some_and(|call| nrs.contains(&call.nr))
    })
}

const ACCEPT: &[libc::c_long] = &[libc::SYS_accept, libc::SYS_accept4];

#[test]
fn blocking_accept_on_the_passed_socket() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import socket; socket.socket(fileno=3).accept()",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!(
        found,
        Listening {
            pid: worker.pid(),
            tid: worker.pid(),
            fd: 3,
            inode: passed.first().copied().expect("one inode"),
            how: How::Accept
        }
    );
    assert_eq!(
        found.to_string(),
        format!("pid {} is in accept on fd 3", worker.pid())
    );
}

#[test]
fn accept_on_a_dup_at_another_fd() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import os, socket; os.dup2(3, 9); os.close(3); socket.socket(fileno=9).accept()",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!((found.fd, found.how), (9, How::Accept));
}

#[test]
fn accept_in_another_thread() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import socket, threading\n\
         t = threading.Thread(target=lambda: socket.socket(fileno=3).accept())\n\
         t.start(); t.join()",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!((found.pid, found.how), (worker.pid(), How::Accept));
    assert_ne!(
        found.tid,
        worker.pid(),
        "the accepting thread is not the main one"
    );
    assert_eq!(survey(&[worker.pid()], &passed).threads, 2);
    assert_eq!(
        found.to_string(),
        format!(
            "pid {} (thread {}) is in accept on fd 3",
            found.pid, found.tid
        )
    );
}

#[test]
fn accept_in_a_child_of_the_worker() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    // A prefork master: the child accepts, the master waits for it.
    let worker = python(
        "import os, socket\n\
         pid = os.fork()\n\
         if pid == 0:\n    socket.socket(fileno=3).accept()\n\
         else:\n    os.waitpid(pid, 0)",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_ne!(found.pid, worker.pid(), "found in the child");
    assert_eq!(found.how, How::Accept);
    let survey = survey(&[worker.pid()], &passed);
    assert_eq!(survey.processes, 2);
    assert_eq!(survey.listening, vec![found]);
    // Where the kernel has no children files: every process's ppid.
    let mut by_ppid = Vec::new();
    let walked = walk(&[worker.pid()], &passed, false, &mut |l| {
        by_ppid.push(l);
        true
    });
    assert_eq!(walked, (2, 2));
    assert_eq!(by_ppid, vec![found]);
}

#[test]
fn accept_on_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("listening-probe-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("unix.sock");
    let _ = fs::remove_file(&path);
    let socket = UnixListener::bind(&path).expect("bind a unix socket");
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import socket; socket.socket(fileno=3).accept()",
        socket.as_raw_fd(),
    );
    assert_eq!(listening(worker.pid(), &passed).how, How::Accept);
    drop(worker);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn epoll_set_holding_a_dup() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import os, selectors, socket\n\
         s = socket.socket(fileno=os.dup(3)); s.setblocking(False)\n\
         sel = selectors.EpollSelector(); sel.register(s, selectors.EVENT_READ)\n\
         sel.select()",
        socket.as_raw_fd(),
    );
    // Registered first, then waited on: wait for both.
    let found = wait_for("the worker to wait on its epoll set", || {
        find(&[worker.pid()], &passed).filter(|l| matches!(l.how, How::Epoll { waiting: true, .. }))
    });
    assert_ne!(found.fd, 3, "added under the dup's fd");
    assert_eq!(found.tid, worker.pid());
}

#[test]
fn epoll_on_a_udp_socket() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import select\n\
         e = select.epoll(); e.register(3, select.EPOLLIN); e.poll()",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert!(matches!(found.how, How::Epoll { .. }), "{found:?}");
}

#[test]
fn poll_on_the_passed_socket() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import os, select\n\
         r, w = os.pipe(); p = select.poll(); p.register(r, select.POLLIN)\n\
         p.register(3, select.POLLIN); p.poll()",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!((found.fd, found.how), (3, How::Poll));
}

#[test]
fn select_on_the_passed_socket() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import select; select.select([3], [], [])",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!((found.fd, found.how), (3, How::Select));
}

#[test]
fn recvfrom_on_a_passed_udp_socket() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import socket; socket.socket(fileno=3).recvfrom(512)",
        socket.as_raw_fd(),
    );
    let found = listening(worker.pid(), &passed);
    assert_eq!((found.fd, found.how), (3, How::Receive));
}

#[test]
fn own_socket_does_not_count() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    // Holds the passed socket, accepts on one of its own.
    let worker = python(
        "import socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.accept()",
        socket.as_raw_fd(),
    );
    let pid = worker.pid();
    wait_for("the worker to accept on its own socket", || {
        in_syscall(pid, ACCEPT).then_some(())
    });
    assert_eq!(find(&[pid], &passed), None);
    assert_eq!(
        survey(&[pid], &passed),
        Survey {
            listening: vec![],
            processes: 1,
            threads: 1
        }
    );
}

#[test]
fn own_socket_in_epoll_does_not_count() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = python(
        "import select, socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         e = select.epoll(); e.register(s, select.EPOLLIN)\n\
         e.register(3, select.EPOLLOUT)\n\
         e.poll()",
        socket.as_raw_fd(),
    );
    let pid = worker.pid();
    let waits: &[libc::c_long] = &[libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2];
    #[cfg(target_arch = "x86_64")]
    let waits = &[waits, &[libc::SYS_epoll_wait]].concat();
    wait_for("the worker to wait on its epoll set", || {
        in_syscall(pid, waits).then_some(())
    });
    // Its own socket has read interest; the passed one (write interest only) does not count.
    assert_eq!(find(&[pid], &passed), None);
}

#[test]
fn a_worker_that_never_listens() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = spawn("sleep", &["600"], socket.as_raw_fd());
    let pid = worker.pid();
    wait_for("the worker to sleep", || {
        in_syscall(pid, &[libc::SYS_clock_nanosleep]).then_some(())
    });
    assert_eq!(find(&[pid], &passed), None);
}

#[test]
fn gone_and_foreign_processes_are_not_listening() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let worker = spawn("true", &[], socket.as_raw_fd());
    let pid = worker.pid();
    drop(worker);
    assert_eq!(find(&[pid], &passed), None);
    assert_eq!(find(&[0, -1, i32::MAX], &passed), None);
    // pid 1 waits on none of our sockets (as another user: not even readable).
    assert_eq!(find(&[1], &passed), None);
    // No socket passed: nothing to look for.
    assert_eq!(
        survey(&[std::process::id() as i32], &Inodes::new()).processes,
        0
    );
}

#[test]
fn survey_of_a_generation() {
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let idle = spawn("sleep", &["600"], socket.as_raw_fd());
    let accepting = python(
        "import socket; socket.socket(fileno=3).accept()",
        socket.as_raw_fd(),
    );
    let roots = [idle.pid(), accepting.pid()];
    let survey = wait_for("one of two workers to listen", || {
        Some(survey(&roots, &passed)).filter(|s| !s.listening.is_empty())
    });
    assert_eq!(survey.processes, 2);
    assert_eq!(survey.listening.len(), 1);
    assert_eq!(survey.listening[0].pid, accepting.pid());
}

/// What an unprivileged start_server sees of its own workers (same uid, its descendants): the
/// blocking calls (`syscall`, `process_vm_readv`) as well as epoll sets. As root, this test runs
/// itself again as nobody and asserts that run passed.
#[test]
fn as_an_unprivileged_user() {
    if nix::unistd::geteuid().is_root() {
        let this = std::env::current_exe().expect("the test binary");
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&this)
            .args([
                "--exact",
                "server::probe::listening::tests::as_an_unprivileged_user",
                "--test-threads=1",
            ])
            .env("RUST_BACKTRACE", "1")
            .current_dir("/")
            .output()
            .expect("run setpriv (util-linux)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "as nobody: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    let socket = listener();
    let passed = inode(socket.as_raw_fd());
    let accepting = python(
        "import socket; socket.socket(fileno=3).accept()",
        socket.as_raw_fd(),
    );
    assert_eq!(listening(accepting.pid(), &passed).how, How::Accept);
    let polling = python(
        "import select; select.select([3], [], [])",
        socket.as_raw_fd(),
    );
    assert_eq!(listening(polling.pid(), &passed).how, How::Select);
    let epolling = python(
        "import select\n\
         e = select.epoll(); e.register(3, select.EPOLLIN); e.poll()",
        socket.as_raw_fd(),
    );
    assert!(matches!(
        listening(epolling.pid(), &passed).how,
        How::Epoll { .. }
    ));
    let own = python(
        "import socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.accept()",
        socket.as_raw_fd(),
    );
    wait_for("the worker to accept on its own socket", || {
        in_syscall(own.pid(), ACCEPT).then_some(())
    });
    assert_eq!(find(&[own.pid()], &passed), None);
    // Root's processes are not ours to read, but their children lists are: a walk from pid 1
    // passes through them (no panic, nothing found there) down to our workers.
    let everyone = survey(&[1], &passed);
    let found: BTreeSet<i32> = everyone.listening.iter().map(|l| l.pid).collect();
    let ours = BTreeSet::from([accepting.pid(), polling.pid(), epolling.pid()]);
    assert_eq!(found, ours, "{everyone:?}");
}
