//! systemd's file descriptor store without PID-1 systemd: a test-owned `NOTIFY_SOCKET` receives
//! the `FDSTORE=1` datagrams with their fds, and the test hands sockets back as systemd does on
//! the next start (`LISTEN_FDS` with the store's names).

mod common;

use std::io::IoSliceMut;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn, UnixAddr, getsockname, getsockopt, recvmsg, sockopt,
};

use common::*;

/// Each datagram's text and the fds that came with it.
type Received = Arc<Mutex<Vec<(String, Vec<OwnedFd>)>>>;

/// A notification socket that keeps the fds sent with each datagram.
struct FdNotifySocket {
    messages: Received,
    /// What the test's store holds by name, closed on `FDSTOREREMOVE=1` as systemd does.
    store: Arc<Mutex<Vec<(String, OwnedFd)>>>,
    address: String,
}

impl FdNotifySocket {
    fn new(tmp: &TempDir) -> FdNotifySocket {
        let path = tmp.path("notify");
        Self::collect(
            UnixDatagram::bind(&path).unwrap(),
            path.display().to_string(),
        )
    }

    /// One in the abstract namespace (`NOTIFY_SOCKET=@name`).
    fn abstract_name(name: &str) -> FdNotifySocket {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Self::collect(UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
    }

    fn collect(socket: UnixDatagram, address: String) -> FdNotifySocket {
        let messages: Received = Arc::default();
        let sink = Arc::clone(&messages);
        let store: Arc<Mutex<Vec<(String, OwnedFd)>>> = Arc::default();
        let held = Arc::clone(&store);
        std::thread::spawn(move || {
            loop {
                let mut buffer = vec![0u8; 65536];
                let mut space = nix::cmsg_space!([RawFd; 8]);
                let mut iov = [IoSliceMut::new(&mut buffer)];
                let Ok(msg) = recvmsg::<()>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) else {
                    return;
                };
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().unwrap() {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        // SAFETY: the kernel just installed these fds in this process for us.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                let n = msg.bytes;
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                if let Some(name) = text
                    .strip_prefix("FDSTOREREMOVE=1\nFDNAME=")
                    .and_then(|rest| rest.strip_suffix('\n'))
                {
                    held.lock().unwrap().retain(|(n, _)| n != name);
                }
                if text == "BARRIER=1\n" {
                    // As systemd does: closing the pipe says everything before was processed.
                    fds.clear();
                }
                sink.lock().unwrap().push((text, fds));
            }
        });
        FdNotifySocket {
            messages,
            store,
            address,
        }
    }

    /// Puts `fd` in the test's store as `name`.
    fn keep(&self, name: &str, fd: OwnedFd) {
        self.store.lock().unwrap().push((name.to_string(), fd));
    }

    fn texts(&self) -> Vec<String> {
        let messages = self.messages.lock().unwrap();
        messages.iter().map(|(t, _)| t.clone()).collect()
    }

    /// Waits for the datagram that is exactly `text`; returns the fds it carried.
    fn wait_for(&self, text: &str) -> Vec<OwnedFd> {
        wait_until(&format!("a notification {text:?}"), || {
            let mut messages = self.messages.lock().unwrap();
            let index = messages.iter().position(|(t, _)| t == text)?;
            Some(std::mem::take(&mut messages[index].1))
        })
    }

    /// Index of the datagram that is exactly `text`.
    fn position(&self, text: &str) -> Option<usize> {
        self.texts().iter().position(|t| t == text)
    }
}

fn listening(fd: &OwnedFd) -> bool {
    getsockopt(fd, sockopt::AcceptConn).unwrap()
}

fn inode(fd: &impl std::os::fd::AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino
}

/// The socket inodes start_server `pid` holds.
fn socket_inodes(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

#[test]
fn bound_sockets_go_to_the_fd_store_and_hold_clients_after_start_server_is_gone() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let port = free_port();
    let path = tmp.path("app.sock");
    let mut server = Server::start(
        &[
            format!("--port=127.0.0.1:{port}"),
            format!("--path={}", path.display()),
            "--".into(),
            tmp.http_worker().display().to_string(),
        ],
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("FDSTORE", "8".into()),
        ],
    );
    let tcp_name = format!("start_server.tcp.127.0.0.1_{port}");
    let tcp = notify.wait_for(&format!("FDSTORE=1\nFDNAME={tcp_name}\n"));
    assert_eq!(tcp.len(), 1, "one fd with the datagram");
    let local: SockaddrIn = getsockname(tcp[0].as_raw_fd()).unwrap();
    assert_eq!(
        SocketAddr::from(std::net::SocketAddrV4::from(local)),
        format!("127.0.0.1:{port}").parse::<SocketAddr>().unwrap()
    );
    assert!(listening(&tcp[0]), "the stored fd is the listening socket");
    let unix_name = format!("start_server.unix.{}", path.display());
    let unix = notify.wait_for(&format!("FDSTORE=1\nFDNAME={unix_name}\n"));
    let local: UnixAddr = getsockname(unix[0].as_raw_fd()).unwrap();
    assert_eq!(local.path(), Some(path.as_path()));
    assert!(listening(&unix[0]));
    // An older copy of each name is removed first, so the store never holds two.
    for name in [&tcp_name, &unix_name] {
        let removed = notify.position(&format!("FDSTOREREMOVE=1\nFDNAME={name}\n"));
        let stored = notify.position(&format!("FDSTORE=1\nFDNAME={name}\n"));
        assert!(
            removed.is_some() && removed < stored,
            "FDSTOREREMOVE before FDSTORE for {name}: {:?}",
            notify.texts()
        );
    }
    served_by(&format!("127.0.0.1:{port}"));

    // Once start_server and its workers are gone, the store's copy still queues clients, and
    // the socket file stays for the next start.
    server.signal(libc::SIGTERM);
    server.wait_exit();
    assert!(
        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()),
        "the socket file of a stored socket is kept"
    );
    TcpStream::connect(("127.0.0.1", port)).expect("queued in the store's copy's backlog");
    drop(tcp);
}

#[test]
fn without_fdstore_nothing_is_stored() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let port = free_port();
    let server = Server::start(
        &[
            format!("--port=127.0.0.1:{port}"),
            "--".into(),
            tmp.http_worker().display().to_string(),
        ],
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("FDSTORE", "0".into()),
        ],
    );
    served_by(&format!("127.0.0.1:{port}"));
    wait_until("READY=1", || {
        notify
            .texts()
            .into_iter()
            .find(|t| t.starts_with("READY=1"))
    });
    assert!(
        notify.texts().iter().all(|t| !t.contains("FDSTORE")),
        "{:?}",
        notify.texts()
    );
    drop(server);
}

/// start_server with `options` and the HTTP worker, handed `stored` (name, fd) as systemd hands
/// back its file descriptor store: at fds 3.. with `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`.
fn start_with_stored(
    tmp: &TempDir,
    notify: &FdNotifySocket,
    stored: &[(&str, RawFd)],
    options: &[String],
) -> Server {
    let names: Vec<&str> = stored.iter().map(|(name, _)| *name).collect();
    let fds: Vec<RawFd> = stored.iter().map(|(_, fd)| *fd).collect();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ exec \"$@\"", "sh", bin()])
        .args(options)
        .arg("--")
        .arg(tmp.http_worker())
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Server::spawn(
        command,
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("FDSTORE", "8".into()),
        ],
    )
}

#[test]
fn stored_sockets_are_used_instead_of_binding_and_stale_names_removed() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let (port, gone) = (free_port(), free_port());
    // Held listening by the test, as systemd's store holds them: a bind by start_server to the
    // same address would fail, so an answer proves the fd was used.
    let kept = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let stale = TcpListener::bind(("127.0.0.1", gone)).unwrap();
    let path = tmp.path("app.sock");
    let unix = UnixListener::bind(&path).unwrap();
    let names = [
        format!("start_server.tcp.127.0.0.1_{port}"),
        format!("start_server.tcp.127.0.0.1_{gone}"),
        format!("start_server.unix.{}", path.display()),
    ];
    let server = start_with_stored(
        &tmp,
        &notify,
        &[
            (&names[0], kept.as_raw_fd()),
            (&names[1], stale.as_raw_fd()),
            (&names[2], unix.as_raw_fd()),
        ],
        &[
            format!("--port=127.0.0.1:{port}"),
            format!("--path={}", path.display()),
        ],
    );
    served_by(&format!("127.0.0.1:{port}"));
    server.wait_log(&format!(
        "using socket 127.0.0.1:{port} from systemd's file descriptor store"
    ));
    server.wait_log(&format!(
        "using socket {} from systemd's file descriptor store",
        path.display()
    ));
    notify.wait_for(&format!("FDSTOREREMOVE=1\nFDNAME={}\n", names[1]));
    let held = socket_inodes(server.pid());
    assert!(held.contains(&inode(&kept)) && held.contains(&inode(&unix)));
    assert!(!held.contains(&inode(&stale)), "the stale socket is closed");
    // Sockets taken from the store are there already: nothing is stored again.
    assert!(
        notify.texts().iter().all(|t| !t.contains("FDSTORE=1")),
        "{:?}",
        notify.texts()
    );
    assert!(path.exists(), "the stored socket's file is kept");
    drop(server);
}

#[test]
fn a_stored_socket_under_another_spelling_is_used_and_stored_again_under_the_new_name() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let port = free_port();
    let kept = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let old = format!("start_server.tcp.127.0.0.1_{port}");
    // The same address, written by name this time.
    let server = start_with_stored(
        &tmp,
        &notify,
        &[(&old, kept.as_raw_fd())],
        &[format!("--port=localhost:{port}")],
    );
    served_by(&format!("127.0.0.1:{port}"));
    let removed = notify.position(&format!("FDSTOREREMOVE=1\nFDNAME={old}\n"));
    let new = format!("start_server.tcp.localhost_{port}");
    let fds = notify.wait_for(&format!("FDSTORE=1\nFDNAME={new}\n"));
    assert_eq!(inode(&fds[0]), inode(&kept), "the stored socket itself");
    assert!(removed.is_some(), "{:?}", notify.texts());
    drop(server);
}

#[test]
fn a_stale_stored_socket_is_let_go_before_an_overlapping_bind() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let port = free_port();
    let name = format!("start_server.tcp.127.0.0.1_{port}");
    let stored = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let fd = stored.as_raw_fd();
    // Like systemd, the test's store closes its copy on FDSTOREREMOVE=1 and answers BARRIER=1
    // after it; a bind to 0.0.0.0 beside a listening 127.0.0.1 on the port would fail.
    notify.keep(&name, stored.into());
    let server = start_with_stored(
        &tmp,
        &notify,
        &[(&name, fd)],
        &[format!("--port=0.0.0.0:{port}")],
    );
    served_by(&format!("127.0.0.1:{port}"));
    let texts = notify.texts();
    let removed = texts
        .iter()
        .position(|t| *t == format!("FDSTOREREMOVE=1\nFDNAME={name}\n"));
    let barrier = texts.iter().position(|t| t == "BARRIER=1\n");
    assert!(removed.is_some() && removed < barrier, "{texts:?}");
    drop(server);
}

#[test]
fn a_stored_unix_socket_whose_file_is_gone_is_bound_anew_and_replaced_in_the_store() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::new(&tmp);
    let path = tmp.path("app.sock");
    let stored = UnixListener::bind(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let name = format!("start_server.unix.{}", path.display());
    let server = start_with_stored(
        &tmp,
        &notify,
        &[(&name, stored.as_raw_fd())],
        &[format!("--path={}", path.display())],
    );
    // Clients find a unix socket by its file: a socket without one is useless.
    let fds = notify.wait_for(&format!("FDSTORE=1\nFDNAME={name}\n"));
    assert_ne!(inode(&fds[0]), inode(&stored), "a new socket");
    let local: UnixAddr = getsockname(fds[0].as_raw_fd()).unwrap();
    assert_eq!(local.path(), Some(path.as_path()));
    assert!(std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()));
    server.wait_log("is gone: binding it anew");
    drop(server);
}

#[test]
fn sockets_reach_an_abstract_notify_socket_too() {
    let tmp = TempDir::new();
    let notify = FdNotifySocket::abstract_name(&format!("fd-store-test-{}", std::process::id()));
    let port = free_port();
    let server = Server::start(
        &[
            format!("--port=127.0.0.1:{port}"),
            "--".into(),
            tmp.http_worker().display().to_string(),
        ],
        &[
            ("NOTIFY_SOCKET", notify.address.clone()),
            ("FDSTORE", "1".into()),
        ],
    );
    let fds = notify.wait_for(&format!(
        "FDSTORE=1\nFDNAME=start_server.tcp.127.0.0.1_{port}\n"
    ));
    assert!(listening(&fds[0]));
    drop(server);
}
