//! The demo image under a real container engine: podman builds it from
//! deploy/container/hello_worker.prebuilt.Containerfile and the static binaries built on the host
//! (`FROM scratch`: nothing is pulled), and runs it as deploy/kubernetes/deployment.yaml says:
//! its command, user, read-only root, no capabilities, no privilege escalation, the emptyDir of
//! the control socket as a tmpfs, the ConfigMap as a directory laid out as the kubelet lays it
//! out, its grace period as `podman stop -t`. The options are read from the manifest, not
//! written here again: a field this test does not know how to give the container fails it.
//!
//! The OCI runtime is tests/container/runc-without-rlimits (`podman --runtime=`): runc, less the
//! rlimits podman asks for, which some sandboxes (the one these tests were written in) refuse
//! to set ("error setting rlimit type 7: operation not permitted"). Nothing else changes.
//! Needs root, podman and runc (installed by .ci/run).

mod common;

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    CONFIGMAP, CONTAINER, Containerfile, DEPLOYMENT, Facts, TempDir, free_port, http_get,
    http_get_within, split_at_dashes, static_binaries, wait_until,
};

const HELLO_IMAGE: &str = "deploy/container/hello_worker.prebuilt.Containerfile";
const BASE_IMAGE: &str = "deploy/container/prebuilt.Containerfile";
const RUNTIME: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/container/runc-without-rlimits"
);

/// A name no other run of these tests on this machine uses.
fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("server-starter-test-{what}-{}-{n}", std::process::id())
}

fn podman() -> Command {
    let mut command = Command::new("podman");
    command.arg(format!("--runtime={RUNTIME}"));
    command
}

/// Runs podman with `args`; its output, whatever the exit status.
fn podman_output(args: &[&str]) -> Output {
    podman()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman ({e}): apt-get install podman runc"))
}

/// Runs podman with `args`, failing the test unless it succeeds; its stdout.
fn podman_ok(args: &[&str]) -> String {
    let output = podman_output(args);
    assert!(
        output.status.success(),
        "podman {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// An image built by `podman build`, removed when dropped.
struct Image(String);

impl Image {
    /// Builds `containerfile` (relative to the repository) with a context holding `files`
    /// (name in the context, file to copy there).
    fn build(containerfile: &str, files: &[(&str, &Path)]) -> Image {
        let context = TempDir::new();
        for (name, file) in files {
            fs::copy(file, context.path(name)).expect("copy into the build context");
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(containerfile);
        Self::build_in(&context, &file)
    }

    fn build_in(context: &TempDir, containerfile: &Path) -> Image {
        let tag = format!("localhost/{}", unique("image"));
        // The docker format: the OCI format has no HEALTHCHECK (podman would drop it).
        podman_ok(&[
            "build",
            "--quiet",
            "--pull=never",
            "--format=docker",
            "--file",
            &containerfile.display().to_string(),
            "--tag",
            &tag,
            &context.0.display().to_string(),
        ]);
        Image(tag)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman_output(&["rmi", "--force", &self.0]);
    }
}

/// A container started with `podman run --detach`, removed when dropped.
struct Container {
    name: String,
}

impl Container {
    fn run(image: &Image, options: &[String]) -> Container {
        let name = unique("container");
        let mut args = vec![
            "run",
            "--detach",
            "--pull=never",
            "--name",
            &name,
            // The test runs each check itself (`podman healthcheck run`): no timer wanted.
            "--health-interval=disable",
        ];
        args.extend(options.iter().map(String::as_str));
        args.push(&image.0);
        podman_ok(&args);
        Container { name }
    }

    fn logs(&self) -> String {
        let output = podman_output(&["logs", &self.name]);
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    /// Waits until the container's log has `needle` `count` times; returns the log.
    fn wait_log_n(&self, needle: &str, count: usize) -> String {
        wait_until(
            &format!("{count}x {needle:?} in the log of {}", self.name),
            || {
                let log = self.logs();
                (log.matches(needle).count() >= count).then_some(log)
            },
        )
    }

    fn wait_log(&self, needle: &str) -> String {
        self.wait_log_n(needle, 1)
    }

    /// `podman healthcheck run`: the image's HEALTHCHECK, run in the container.
    fn healthcheck(&self) -> Output {
        podman_output(&["healthcheck", "run", &self.name])
    }

    fn kill(&self, signal: &str) {
        podman_ok(&["kill", &format!("--signal={signal}"), &self.name]);
    }

    /// `podman stop -t GRACE`: how long it took, and the container's exit status.
    fn stop(&self, grace: u64) -> (Duration, i32) {
        let start = Instant::now();
        podman_ok(&["stop", "--time", &grace.to_string(), &self.name]);
        let took = start.elapsed();
        let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        (took, code.parse().expect("an exit code"))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_output(&["rm", "--force", "--time=0", &self.name]);
    }
}

/// The demo image, from the host's static binaries.
fn hello_image() -> Image {
    let (start_server, hello_worker) = static_binaries();
    Image::build(
        HELLO_IMAGE,
        &[
            ("start_server", start_server),
            ("hello_worker", hello_worker),
        ],
    )
}

/// A ConfigMap volume as the kubelet writes it: the files in a hidden directory, `..data` a
/// symbolic link to it, each key a symbolic link through `..data`. An update writes a new
/// directory and renames a new `..data` over the old: one atomic change.
struct ConfigMapVolume {
    dir: TempDir,
    version: u32,
}

impl ConfigMapVolume {
    fn new(files: &[(String, String)]) -> ConfigMapVolume {
        let mut volume = ConfigMapVolume {
            dir: TempDir::new(),
            version: 0,
        };
        volume.update(files);
        for (key, _) in files {
            symlink(format!("..data/{key}"), volume.dir.path(key)).expect("symlink a key");
        }
        volume
    }

    fn update(&mut self, files: &[(String, String)]) {
        self.version += 1;
        let data = format!("..2026_01_01_00_00_00.{:09}", self.version);
        fs::create_dir(self.dir.path(&data)).expect("a data directory");
        for (key, content) in files {
            fs::write(self.dir.path(&data).join(key), content).expect("write a key");
        }
        symlink(&data, self.dir.path("..data_tmp")).expect("symlink ..data_tmp");
        fs::rename(self.dir.path("..data_tmp"), self.dir.path("..data")).expect("swap ..data");
    }
}

/// What deployment.yaml gives its container, as `podman run` options.
struct Deployed {
    /// Everything but the command: user, security, volumes, port.
    options: Vec<String>,
    /// The container's `command` (it replaces the image's ENTRYPOINT).
    command: Vec<String>,
    /// terminationGracePeriodSeconds.
    grace: u64,
    /// Where the container's port is published on the host.
    addr: String,
    config: ConfigMapVolume,
}

impl Deployed {
    fn read() -> Deployed {
        let facts = Facts::of_manifests();
        let known_pod = [
            "terminationGracePeriodSeconds",
            "securityContext",
            "containers",
            "volumes",
        ];
        for key in facts.all(&format!("{DEPLOYMENT}.podKey")) {
            assert!(
                known_pod.contains(&key.as_str()),
                "the pod spec's {key}: this test does not give it to the container (add it here)"
            );
        }
        // imagePullPolicy: the image is local; the probes are the image's HEALTHCHECK
        // (tests/deploy.rs), run by `podman healthcheck run`.
        let known_container = [
            "name",
            "image",
            "imagePullPolicy",
            "command",
            "ports",
            "readinessProbe",
            "livenessProbe",
            "securityContext",
            "volumeMounts",
        ];
        for key in facts.all(&format!("{CONTAINER}.key")) {
            assert!(
                known_container.contains(&key.as_str()),
                "the container's {key}: this test does not give it to the container (add it here)"
            );
        }
        let mut options = Vec::new();
        let (mut user, mut group, mut non_root) = (None, None, false);
        for (path, value) in facts.leaves(&format!("{DEPLOYMENT}.securityContext")) {
            match (path, value) {
                ("runAsUser", id) => user = Some(id.to_string()),
                ("runAsGroup", id) => group = Some(id.to_string()),
                ("runAsNonRoot", "true") => non_root = true,
                // podman applies its default seccomp profile, as the kubelet the runtime's.
                ("seccompProfile.type", "RuntimeDefault") => {}
                other => panic!("the pod's securityContext {other:?}: not known to this test"),
            }
        }
        let user = user.expect("runAsUser");
        assert!(!non_root || user != "0", "runAsNonRoot with runAsUser 0");
        options.push(match group {
            Some(group) => format!("--user={user}:{group}"),
            None => format!("--user={user}"),
        });
        for (path, value) in facts.leaves(&format!("{CONTAINER}.securityContext")) {
            match (path, value) {
                ("allowPrivilegeEscalation", "false") => {
                    options.push("--security-opt=no-new-privileges".into())
                }
                // Nothing writable but the volumes: podman's own tmpfs on /run, /tmp and
                // /var/tmp (--read-only-tmpfs) is not in a pod.
                ("readOnlyRootFilesystem", "true") => {
                    options.extend(["--read-only".into(), "--read-only-tmpfs=false".into()])
                }
                ("capabilities.drop", capability) => {
                    options.push(format!("--cap-drop={}", capability.to_lowercase()))
                }
                ("capabilities.add", capability) => {
                    options.push(format!("--cap-add={}", capability.to_lowercase()))
                }
                other => {
                    panic!("the container's securityContext {other:?}: not known to this test")
                }
            }
        }
        let config = ConfigMapVolume::new(&facts.configmap_files());
        let read_only = facts.all(&format!("{CONTAINER}.readOnlyMount"));
        for (volume, path) in facts.mounts() {
            let source = facts.volume_source(volume);
            if source == "emptyDir" {
                // An emptyDir is a new directory, mode 0777; in memory or not, a tmpfs here.
                let mut tmpfs = format!("--tmpfs={path}:rw,mode=0777");
                for (field, value) in facts.leaves(&format!("{DEPLOYMENT}.emptyDir.{volume}")) {
                    match (field, value) {
                        ("medium", "Memory") => {}
                        ("sizeLimit", size) => {
                            tmpfs.push_str(&format!(",size={}", tmpfs_size(size)))
                        }
                        other => panic!("emptyDir {volume}'s {other:?}: not known to this test"),
                    }
                }
                options.push(tmpfs);
            } else if source == format!("configMap {CONFIGMAP}") {
                let mode = if read_only.iter().any(|v| v == volume) {
                    "ro"
                } else {
                    "rw"
                };
                options.push(format!("--volume={}:{path}:{mode}", config.dir.0.display()));
            } else {
                panic!("volume {volume} ({source}): not known to this test");
            }
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        for container_port in facts.all(&format!("{CONTAINER}.port")) {
            options.push(format!("--publish={addr}:{container_port}"));
        }
        let grace = facts
            .one(&format!("{DEPLOYMENT}.terminationGracePeriodSeconds"))
            .parse()
            .expect("whole seconds");
        Deployed {
            options,
            command: facts.all(&format!("{CONTAINER}.command")).to_vec(),
            grace,
            addr,
            config,
        }
    }

    /// The options that run `command` in place of the image's ENTRYPOINT.
    fn with_command(&self, command: &[String]) -> Vec<String> {
        let mut options = self.options.clone();
        options.push(format!(
            "--entrypoint={}",
            serde_json::to_string(command).unwrap()
        ));
        options
    }

    /// The value of `--NAME=` in the command.
    fn option(&self, name: &str) -> &str {
        let (options, _) = split_at_dashes(&self.command);
        options
            .iter()
            .find_map(|o| o.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name}= in {:?}", self.command))
    }
}

/// A Kubernetes quantity (`1Mi`) as a tmpfs size (`1m`).
fn tmpfs_size(quantity: &str) -> String {
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g")] {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return format!("{number}{unit}");
        }
    }
    assert!(
        quantity.chars().all(|c| c.is_ascii_digit()),
        "sizeLimit {quantity}: not known to this test"
    );
    quantity.to_string()
}

/// The generation of a hello_worker answer ("Hello from pid P, generation G\n").
fn generation(body: &str) -> Option<u64> {
    body.trim_end().rsplit_once("generation ")?.1.parse().ok()
}

fn pid(body: &str) -> Option<u32> {
    body.strip_prefix("Hello from pid ")?
        .split(',')
        .next()?
        .parse()
        .ok()
}

/// Waits until `addr` answers from generation `wanted`; the answer.
fn answer_from(addr: &str, wanted: u64) -> String {
    wait_until(&format!("generation {wanted} to answer at {addr}"), || {
        http_get(addr)
            .ok()
            .filter(|body| generation(body) == Some(wanted))
    })
}

/// A client asking `addr` one request after another, each on a new connection, until stopped:
/// when each answer came, and every failure.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<Instant>, Vec<String>)>,
}

impl ClientLoop {
    fn start(addr: &str) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let addr = addr.to_string();
        let thread = std::thread::spawn(move || {
            let (mut answered, mut failed) = (Vec::new(), Vec::new());
            while !flag.load(Ordering::SeqCst) {
                match http_get_within(&addr, Duration::from_secs(10)) {
                    Ok(_) => answered.push(Instant::now()),
                    Err(e) => {
                        failed.push(e.to_string());
                        // Not a busy loop once nothing answers (after the stop).
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            (answered, failed)
        });
        ClientLoop { stop, thread }
    }

    fn finish(self) -> (Vec<Instant>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the client loop")
    }
}

#[test]
fn as_deployed_it_serves_reloads_with_no_failed_request_is_healthy_and_drains_on_stop() {
    let image = hello_image();
    let mut deployed = Deployed::read();
    let container = Container::run(&image, &deployed.with_command(&deployed.command));
    let addr = deployed.addr.clone();
    let first = answer_from(&addr, 1);
    container.wait_log("is ready");
    let check = container.healthcheck();
    assert!(
        check.status.success(),
        "HEALTHCHECK failed while generation 1 serves: {check:?}\n{}",
        container.logs()
    );

    // HUP, as `podman kill` sends it: a new generation, and no request fails meanwhile.
    let client = ClientLoop::start(&addr);
    container.kill("HUP");
    answer_from(&addr, 2);
    container.wait_log(&format!("old worker {} died", pid(&first).unwrap()));
    let (answered, failed) = client.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the reload: {failed:?}",
        failed.len(),
        answered.len() + failed.len()
    );
    assert!(!answered.is_empty());
    eprintln!(
        "reload on HUP: {} requests answered, none failed",
        answered.len()
    );

    // The ConfigMap changes as the kubelet changes it: --reload-on-change reloads.
    deployed
        .config
        .update(&Facts::of_manifests().configmap_files());
    answer_from(&addr, 3);
    container.wait_log_n("is ready", 3);
    let check = container.healthcheck();
    assert!(check.status.success(), "{check:?}\n{}", container.logs());

    // `podman stop`: TERM; start_server keeps serving for --shutdown-delay, then stops its
    // worker and exits 0, well within the grace period.
    let delay: u64 = deployed.option("shutdown-delay").parse().expect("seconds");
    let client = ClientLoop::start(&addr);
    let stopping = Instant::now();
    let (took, code) = container.stop(deployed.grace);
    let (answered, _) = client.finish();
    let log = container.logs();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("KILL"), "{log}");
    // Lower bounds only: start_server cannot have waited less than the delay, whatever the load.
    assert!(
        took >= Duration::from_secs(delay),
        "podman stop took {took:?}, less than --shutdown-delay={delay}:\n{log}"
    );
    let last = answered
        .iter()
        .filter(|t| **t > stopping)
        .map(|t| t.duration_since(stopping))
        .max()
        .unwrap_or_default();
    assert!(
        last >= Duration::from_secs(delay) / 2,
        "the last answer came {last:?} after podman stop, --shutdown-delay={delay}:\n{log}"
    );
    eprintln!(
        "podman stop -t {} with --shutdown-delay={delay}: exit status 0 after {took:?}; \
         the last answer {last:?} after the stop began",
        deployed.grace
    );
}

#[test]
fn the_images_own_entrypoint_stops_with_status_0() {
    let image = hello_image();
    let deployed = Deployed::read();
    let container = Container::run(&image, &deployed.options);
    answer_from(&deployed.addr, 1);
    container.wait_log("is ready");
    let (took, code) = container.stop(deployed.grace);
    let log = container.logs();
    // 0 is start_server's own exit: podman's KILL at the end of the grace would be 137.
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("received TERM"), "{log}");
    assert!(!log.contains("KILL"), "{log}");
    eprintln!(
        "podman stop -t {}: exit status 0 after {took:?}",
        deployed.grace
    );
}

#[test]
fn a_stop_that_has_to_kill_a_worker_ends_with_status_3() {
    let image = hello_image();
    let deployed = Deployed::read();
    // The image's ENTRYPOINT, but the workers get a signal they ignore (WINCH) instead of TERM:
    // after --kill-old-timeout, start_server kills them.
    let entrypoint = Containerfile::read(HELLO_IMAGE).entrypoint();
    let (options, worker) = split_at_dashes(&entrypoint);
    let mut command = options.to_vec();
    command.push("--signal-on-term=WINCH".into());
    command.push("--".into());
    command.extend(worker.iter().cloned());
    let container = Container::run(&image, &deployed.with_command(&command));
    answer_from(&deployed.addr, 1);
    container.wait_log("is ready");
    let (took, code) = container.stop(deployed.grace);
    let log = container.logs();
    assert!(log.contains("sending KILL"), "{log}");
    assert_eq!(code, 3, "{log}");
    eprintln!(
        "podman stop -t {} with a worker that ignores its signal: exit status 3 after {took:?}",
        deployed.grace
    );
}

#[test]
fn the_healthcheck_fails_while_the_worker_crash_loops() {
    let image = hello_image();
    let deployed = Deployed::read();
    // The Deployment's command, with a worker that exits at once, every time: start_server
    // itself, given an option it does not have. Nothing ever serves.
    let (options, _) = split_at_dashes(&deployed.command);
    let mut command = options.to_vec();
    command.extend(["--".into(), options[0].clone(), "--no-such-option".into()]);
    let container = Container::run(&image, &deployed.with_command(&command));
    container.wait_log_n("failed to start", 3);
    let check = container.healthcheck();
    let said = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success(),
        "HEALTHCHECK passed while the worker crash-loops: {check:?}\n{}",
        container.logs()
    );
    assert!(said.contains("unhealthy"), "{said}");
    // Why the probes are exec probes: start_server's socket accepts a connection all the same.
    TcpStream::connect(&deployed.addr).expect("the published port accepts a connection");
}

#[test]
fn an_application_image_built_on_the_base_image_serves() {
    let (start_server, hello_worker) = static_binaries();
    let base = Image::build(BASE_IMAGE, &[("start_server", start_server)]);
    // As the base image's Containerfile shows: the application, and start_server's arguments.
    let context = TempDir::new();
    fs::copy(hello_worker, context.path("hello_worker")).expect("copy hello_worker");
    let containerfile: PathBuf = context.path("Containerfile");
    fs::write(
        &containerfile,
        format!(
            "FROM {}\nCOPY hello_worker /usr/bin/hello_worker\n\
             CMD [\"--port=8080\", \"--\", \"/usr/bin/hello_worker\"]\n",
            base.0
        ),
    )
    .expect("write the application's Containerfile");
    let application = Image::build_in(&context, &containerfile);
    let port = free_port();
    let container = Container::run(&application, &[format!("--publish=127.0.0.1:{port}:8080")]);
    answer_from(&format!("127.0.0.1:{port}"), 1);
    container.wait_log("is ready");
    let (_, code) = container.stop(10);
    assert_eq!(code, 0, "{}", container.logs());
}
