//! start_server as a container's PID 1, without a container engine: the static binary runs as
//! PID 1 of a new PID and mount namespace (`unshare --fork --pid --mount-proc --root=DIR`) whose
//! root directory holds nothing but static binaries (and an empty /proc for the namespace's
//! own). The network namespace is shared, so the test connects from outside, and it signals
//! start_server by its pid in the outer namespace, as a container engine does.
//!
//! The static binaries are built once per run into target/static (incremental afterwards).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{
    Containerfile, Server, TARGET, TempDir, alive, assert_static, children, free_port, http_get,
    pid_inside, reaped, run_build, static_binaries, static_dir, wait_until,
};

const CONTAINERFILE: &str = "deploy/container/hello_worker.Containerfile";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// tests/pid1/orphaning_worker.rs, built static with rustc (std only), when its source changed.
fn orphaning_worker() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let source = repo().join("tests/pid1/orphaning_worker.rs");
        let binary = static_dir().join("orphaning_worker");
        let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&binary) < modified(&source) {
            fs::create_dir_all(static_dir()).expect("create target/static");
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            // Built aside, then renamed: a concurrent run never sees half a binary.
            let building = static_dir().join(format!("orphaning_worker.{}", std::process::id()));
            run_build(
                Command::new(rustc)
                    .args([
                        "--edition",
                        "2024",
                        "-C",
                        "target-feature=+crt-static",
                        "-o",
                    ])
                    .arg(&building)
                    .arg(&source),
            );
            fs::rename(&building, &binary).expect("rename the worker into place");
        }
        assert_static(&binary);
        binary
    })
}

/// A root directory holding `files` (path in the root, binary to copy there) and an empty
/// /proc, where `unshare --mount-proc` mounts the new namespace's.
fn root_with(files: &[(&str, &Path)]) -> TempDir {
    let root = TempDir::new();
    fs::create_dir(root.path("proc")).expect("mkdir proc");
    for (inside, binary) in files {
        let at = root.path(inside.trim_start_matches('/'));
        fs::create_dir_all(at.parent().expect("a parent")).expect("mkdir");
        fs::copy(binary, &at).expect("copy a binary into the root");
    }
    root
}

/// start_server (`command[0]`, a path in `root`) as PID 1 of new PID and mount namespaces, with
/// `root` as its root directory.
fn run_as_pid1(root: &TempDir, command: &[String], env: &[(&str, String)]) -> Pid1 {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(format!("--root={}", root.0.display()))
        .args(command);
    let mut server = Server::spawn(unshare, env);
    let unshare_pid = server.pid();
    let outer = wait_until("start_server to run under unshare", || {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "unshare ended ({status}): it needs root and util-linux:\n{}",
                server.log()
            );
        }
        children(unshare_pid).first().copied()
    });
    let pid1 = Pid1 { server, outer };
    pid1.server.wait_log("start_server (pid:1) starting now...");
    pid1
}

/// start_server running as PID 1; `outer` is its pid in our namespace.
struct Pid1 {
    server: Server,
    outer: i32,
}

impl Pid1 {
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the start_server this test started.
        unsafe { libc::kill(self.outer, signal) };
    }

    /// The pid in our namespace of start_server's child whose pid inside is `inner`.
    fn child(&self, inner: i32) -> i32 {
        wait_until(
            &format!("process {inner} among start_server's children"),
            || {
                children(self.outer)
                    .into_iter()
                    .find(|&pid| pid_inside(pid) == Some(inner))
            },
        )
    }
}

/// `"--port=8080"` → `"--port=PORT"`: the Containerfile's ENTRYPOINT, on a free port.
fn entrypoint_on(containerfile: &Containerfile, port: u16) -> Vec<String> {
    containerfile
        .entrypoint()
        .into_iter()
        .map(|word| word.replace("--port=8080", &format!("--port={port}")))
        .collect()
}

/// The final stage's `COPY --from=build SOURCE DEST` lines: (file name of SOURCE, DEST).
fn copied(containerfile: &str) -> Vec<(String, String)> {
    containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from=build "))
        .map(|l| {
            let (source, dest) = l.split_once(' ').expect("COPY SOURCE DEST");
            let name = source.rsplit('/').next().expect("a file name");
            (name.to_string(), dest.trim().to_string())
        })
        .collect()
}

#[test]
fn the_hello_worker_image_serves_reloads_and_stops_as_pid_1() {
    let (start_server, hello_worker) = static_binaries();
    let image = Containerfile::read(CONTAINERFILE);
    let containerfile = &image.text;
    assert!(
        containerfile.contains("\nFROM scratch\n"),
        "{containerfile}"
    );
    assert!(containerfile.contains("\nSTOPSIGNAL SIGTERM\n"));
    let build = format!(
        "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target {TARGET}"
    );
    let readme = fs::read_to_string(repo().join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("\n{build}\n")),
        "README's static build"
    );
    assert!(
        containerfile.contains(&format!("\nRUN {build} ")),
        "the image is built static as README says"
    );
    let files: Vec<(String, &Path)> = copied(containerfile)
        .into_iter()
        .map(|(name, dest)| match name.as_str() {
            "start_server" => (dest, start_server.as_path()),
            "hello_worker" => (dest, hello_worker.as_path()),
            other => panic!("{CONTAINERFILE} copies {other}, unknown to this test"),
        })
        .collect();
    assert_eq!(files.len(), 2, "{containerfile}");
    let root = root_with(
        &files
            .iter()
            .map(|(d, b)| (d.as_str(), *b))
            .collect::<Vec<_>>(),
    );
    // The control socket's directory, a tmpfs or emptyDir under an engine.
    let entrypoint = entrypoint_on(&image, free_port());
    for control in entrypoint
        .iter()
        .filter_map(|w| w.strip_prefix("--control="))
    {
        let directory = Path::new(control).parent().expect("a directory");
        fs::create_dir_all(root.0.join(directory.strip_prefix("/").expect("absolute")))
            .expect("create the control socket's directory");
    }
    let port: u16 = entrypoint
        .iter()
        .find_map(|w| w.strip_prefix("--port=")?.parse().ok())
        .expect("--port");
    let pid1 = run_as_pid1(&root, &entrypoint, &[]);
    let addr = format!("127.0.0.1:{port}");
    let hello = |generation: u64| {
        wait_until(&format!("generation {generation} to answer"), || {
            http_get(&addr)
                .ok()
                .filter(|body| body.ends_with(&format!("generation {generation}\n")))
        })
    };
    assert_eq!(hello(1), "Hello from pid 2, generation 1\n");

    pid1.signal(libc::SIGHUP);
    hello(2);
    pid1.server.wait_log("old worker 2 died");

    let mut server = pid1.server;
    // SAFETY: kill(2) on the start_server this test started.
    unsafe { libc::kill(pid1.outer, libc::SIGTERM) };
    let status = server.wait_exit();
    let log = server.log();
    assert_eq!(status.code(), Some(0), "a clean stop exits 0:\n{log}");
    assert!(
        log.contains("received TERM, sending TERM to all workers:"),
        "{log}"
    );
    assert!(!log.contains("KILL"), "{log}");
}

#[test]
fn as_pid_1_every_orphan_is_reaped_and_a_foreign_one_left_alone() {
    let root = root_with(&[
        ("/start_server", static_binaries().0.as_path()),
        ("/orphaning_worker", orphaning_worker()),
    ]);
    let command = ["/start_server", "--interval=0.1", "--", "/orphaning_worker"];
    let pid1 = run_as_pid1(&root, &command.map(String::from), &[]);
    let orphan = |generation| {
        let log = pid1
            .server
            .wait_log_n("orphaning_worker: left orphan ", generation);
        let line = log
            .lines()
            .filter_map(|l| l.strip_prefix("orphaning_worker: left orphan "))
            .nth(generation - 1)
            .expect("the line");
        let inner: i32 = line.parse().expect("a pid");
        (inner, pid1.child(inner))
    };
    let (_, first) = orphan(1);

    // A process started from outside (as by `docker exec`) whose parent exits inside: its
    // orphan comes to PID 1 too, and has nothing to do with the workers.
    let output = Command::new("nsenter")
        .arg(format!("--target={}", pid1.outer))
        .args(["--pid", "--", "sh", "-c"])
        .arg("sleep 1000 </dev/null >/dev/null 2>&1 & echo $!")
        .output()
        .expect("run nsenter");
    assert!(output.status.success(), "{output:?}");
    let inner: i32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("the pid of sleep");
    let foreign = pid1.child(inner);

    // A reload: the first worker exits, its orphan is a stray (TERM, then reaped); the foreign
    // process is left alone.
    pid1.signal(libc::SIGHUP);
    let (second, _) = orphan(2);
    wait_until("the first worker's orphan to be reaped", || {
        reaped(first).then_some(())
    });
    let log = pid1.server.wait_log(&format!("process {inner} "));
    assert!(
        log.contains(&format!("process {inner} was adopted but cannot be told")),
        "{log}"
    );
    assert!(alive(foreign), "{log}");

    // Whatever kills it, an orphan does not stay a zombie.
    // SAFETY: kill(2) on the sleep this test started.
    unsafe { libc::kill(foreign, libc::SIGKILL) };
    wait_until("the foreign orphan to be reaped", || {
        reaped(foreign).then_some(())
    });
    pid1.server
        .wait_log(&format!("adopted process {inner} exited, status:9"));

    // INT (Ctrl-C of `docker run -it`) stops it as TERM does.
    let mut server = pid1.server;
    // SAFETY: as above.
    unsafe { libc::kill(pid1.outer, libc::SIGINT) };
    let status = server.wait_exit();
    let log = server.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("received INT, sending TERM to all workers:"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "process {second} was left behind by a worker, sending TERM"
        )),
        "at the stop, the second worker's orphan got TERM:\n{log}"
    );
}

#[test]
fn as_pid_1_a_stop_that_has_to_kill_a_worker_exits_3() {
    let root = root_with(&[
        ("/start_server", static_binaries().0.as_path()),
        ("/orphaning_worker", orphaning_worker()),
    ]);
    let command = [
        "/start_server",
        "--kill-old-timeout=0.5",
        "--",
        "/orphaning_worker",
    ];
    let pid1 = run_as_pid1(
        &root,
        &command.map(String::from),
        &[("IGNORE_TERM", "1".into())],
    );
    pid1.server.wait_log("orphaning_worker: left orphan ");
    let mut server = pid1.server;
    // SAFETY: kill(2) on the start_server this test started.
    unsafe { libc::kill(pid1.outer, libc::SIGTERM) };
    let status = server.wait_exit();
    let log = server.log();
    assert!(
        log.contains("workers still alive after their signal, sending KILL:2"),
        "{log}"
    );
    assert_eq!(status.code(), Some(3), "{log}");
}

#[test]
fn signals_start_server_does_not_use_neither_stop_it_nor_go_unnoticed() {
    let tmp = TempDir::new();
    let port = free_port();
    let worker = tmp.http_worker();
    let server = tmp.start_server(
        &[&format!("--port=127.0.0.1:{port}")],
        &[&worker.display().to_string()],
        &[],
    );
    let (pid, _) = common::served_by(&format!("127.0.0.1:{port}"));
    // Ignored by default: nothing to say.
    server.signal(libc::SIGWINCH);
    // Fatal by default.
    for (signal, name) in [
        (libc::SIGPWR, "PWR"),
        (libc::SIGVTALRM, "VTALRM"),
        (libc::SIGRTMIN() + 1, "RTMIN+1"),
    ] {
        server.signal(signal);
        server.wait_log(&format!(
            "received {name}, which start_server does not use: ignored"
        ));
    }
    // Still serving, with the same worker: nothing was restarted or stopped.
    assert_eq!(common::served_by(&format!("127.0.0.1:{port}")).0, pid);
    assert!(alive(server.pid()));
}
