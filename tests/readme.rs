//! README.md's commands, taken out of it literally so that it cannot drift: *Try it*'s command runs
//! in a fresh copy of the repository (its tracked files) and the demo answers, reloads and stops
//! as the README says; `.ci/run` runs *Run the tests*' command. The copy's release build goes to
//! a target directory of its own inside this one, so later runs are incremental. Needs port 8080
//! free (the README's port) and git.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const README_RUN: &str = "<!-- tests/readme.rs runs this command -->";
const README_TRY: &str = "<!-- tests/readme.rs does what this block says -->";
const README_TEST: &str = "<!-- tests/readme.rs checks that .ci/run runs this command -->";
const README_FRESH: &str = "<!-- tests/readme.rs checks that this script installs what the tests need and runs the command below -->";
const README_RUST: &str = "<!-- tests/readme.rs checks that worker/README.md, whose example is compiled, has this one -->";
/// A first release build (lto, one codegen unit) of everything on a small machine.
const README_DEPENDENCY: &str =
    "<!-- tests/readme.rs checks this against what cargo would publish -->";
const BUILD_PATIENCE: Duration = Duration::from_secs(40 * 60);

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The lines of the fenced block that follows `marker` in README.md.
fn readme_block(marker: &str) -> Vec<String> {
    let readme = fs::read_to_string(repository().join("README.md")).unwrap();
    let (_, after) = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let mut lines = after.lines().skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or_default();
    assert!(fence.starts_with("```"), "no code block after {marker}");
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// The single command of the block after `marker`.
fn readme_command(marker: &str) -> String {
    match readme_block(marker).as_slice() {
        [command] => command.trim().to_string(),
        other => panic!("expected one command after {marker}, found {other:?}"),
    }
}

/// The main target directory (the one holding this test's start_server).
fn target_dir() -> PathBuf {
    Path::new(bin())
        .ancestors()
        .nth(2)
        .expect("start_server lies in TARGET/PROFILE/")
        .to_path_buf()
}

/// Copies the repository's tracked files (what a clone has) into `copy`, keeping their
/// modification times so that cargo rebuilds only what changed since the last run. Its `target`
/// is a link to `target`, a directory that outlives the copy.
fn fresh_copy(copy: &Path, target: &Path) {
    let listing = Command::new("git")
        .args(["-c", "safe.directory=*", "ls-files", "-z"])
        .current_dir(repository())
        .output()
        .expect("this test needs git (apt-get install git)");
    assert!(
        listing.status.success(),
        "git ls-files failed in {}: {}",
        repository().display(),
        String::from_utf8_lossy(&listing.stderr)
    );
    if copy.exists() {
        fs::remove_dir_all(copy).unwrap();
    }
    for name in listing.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap();
        let (from, to) = (repository().join(name), copy.join(name));
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue; // deleted in the work tree, not yet committed
        };
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap();
        fs::File::options()
            .write(true)
            .open(&to)
            .and_then(|f| f.set_modified(meta.modified()?))
            .unwrap();
    }
    fs::create_dir_all(target).unwrap();
    std::os::unix::fs::symlink(target, copy.join("target")).unwrap();
}

/// The README's command, run by a shell in its own process group, killed with it on drop.
struct Demo {
    child: Child,
    log: PathBuf,
}

impl Demo {
    fn start(command: &str, dir: &Path) -> Demo {
        let log = dir.join("demo.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("run sh");
        Demo { child, log }
    }

    fn output(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test with the command's output if it has ended.
    fn check_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "README's command ended ({status}) before it should; its output ends:\n{}",
                self.output()
            );
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill(2) on the process group of our own child.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// `curl http://HOST:PORT/ ... generation N`: waits until HOST:PORT answers with generation N.
fn do_curl(demo: &mut Demo, line: &str) {
    let url = line
        .split_whitespace()
        .nth(1)
        .expect("curl takes an address");
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let generation = line
        .rsplit_once("generation ")
        .map(|(_, n)| format!("generation {}", n.trim()))
        .unwrap_or_else(|| panic!("README's curl line says no generation: {line}"));
    let start = Instant::now();
    loop {
        match http_get(&address) {
            Ok(answer) if answer.contains(&generation) => return,
            Ok(answer) if start.elapsed() > PATIENCE => {
                panic!("`{line}`: the demo answers {answer:?}, not {generation}")
            }
            Err(e) if start.elapsed() > PATIENCE => panic!("`{line}`: {e}"),
            _ => {}
        }
        demo.check_running();
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs one line of the README's block as a shell command and checks it succeeded.
fn do_shell(dir: &Path, line: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "`{line}` failed: {status}");
}

fn pid_in(file: &str) -> Option<i32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn the_readme_demo_runs_reloads_and_stops_from_a_fresh_copy() {
    let run = readme_command(README_RUN);
    let steps = readme_block(README_TRY);
    assert!(
        run.contains("--port=8080") && run.contains("--pid-file=/tmp/hello.pid"),
        "this test expects the demo on port 8080 with /tmp/hello.pid: {run}"
    );
    if let Err(e) = TcpListener::bind("0.0.0.0:8080") {
        panic!("port 8080 is busy ({e}): README's demo needs it; stop what listens there");
    }
    let _ = fs::remove_file("/tmp/hello.pid");
    let copy = target_dir().join("readme-copy");
    fresh_copy(&copy, &target_dir().join("readme-target"));

    let mut demo = Demo::start(&run, &copy);
    // The command builds first: wait for the first answer as long as a release build takes.
    let start = Instant::now();
    while http_get("127.0.0.1:8080").is_err() || pid_in("/tmp/hello.pid").is_none() {
        demo.check_running();
        assert!(
            start.elapsed() < BUILD_PATIENCE,
            "README's command has not served within {BUILD_PATIENCE:?}; its output ends:\n{}",
            demo.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let start_server = pid_in("/tmp/hello.pid").unwrap();

    let mut stopped = false;
    for line in steps.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        if line.starts_with("curl ") {
            do_curl(&mut demo, line);
        } else if line.starts_with("kill ") {
            demo.check_running();
            do_shell(&copy, line);
            stopped |= line.contains("-TERM");
        } else {
            panic!("this test does not know how to do README's `{line}`");
        }
    }
    assert!(stopped, "README's block does not stop the demo: {steps:?}");
    let status = wait_until("README's command to end after SIGTERM", || {
        demo.child.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "after SIGTERM: {status}; output:\n{}",
        demo.output()
    );
    assert!(
        !alive(start_server),
        "start_server {start_server} still runs"
    );
    assert!(
        !Path::new("/tmp/hello.pid").exists(),
        "start_server left its pid file"
    );
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let command = readme_command(README_TEST);
    let ci = fs::read_to_string(repository().join(".ci/run")).unwrap();
    let runs: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cargo test"))
        .collect();
    assert_eq!(
        runs,
        [command.as_str()],
        ".ci/run must run README's test command"
    );
}

#[test]
fn the_one_command_for_a_fresh_machine_is_ci_which_installs_and_runs_the_tests() {
    let command = readme_command(README_FRESH);
    let script = command
        .strip_prefix("bash ")
        .unwrap_or_else(|| panic!("expected `bash SCRIPT`, found {command:?}"));
    let ci = fs::read_to_string(repository().join(script))
        .unwrap_or_else(|e| panic!("README's {command:?}: {e}"));
    assert!(
        ci.contains("\napt-get install "),
        "{script} installs nothing"
    );
    // What it runs is README's test command (the test above).
    assert_eq!(script, ".ci/run");
}

#[test]
fn the_rust_example_is_the_worker_crates_compiled_one() {
    let example = readme_block(README_RUST).join("\n");
    let worker = fs::read_to_string(repository().join("worker/README.md")).unwrap();
    let (_, compiled) = worker
        .split_once("```rust,no_run\n")
        .expect("worker/README.md has a ```rust,no_run example (a doctest of the crate)");
    let compiled = compiled.split("\n```").next().unwrap_or_default();
    assert_eq!(
        example, compiled,
        "README.md's Rust example must be worker/README.md's, which `cargo test` compiles"
    );
}

#[test]
fn the_dependency_snippet_is_what_cargo_would_publish() {
    // What `cargo publish` would upload for the worker crate: its name, version and files.
    let output = Command::new(env!("CARGO"))
        .args([
            "package",
            "--list",
            "--allow-dirty",
            "-p",
            "server-starter-worker",
        ])
        .current_dir(repository())
        .output()
        .expect("run cargo package --list");
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    for file in [
        "Cargo.toml",
        "README.md",
        "LICENSE",
        "src/lib.rs",
        "src/listeners.rs",
    ] {
        assert!(
            listed.lines().any(|l| l == file),
            "{file} not packaged:\n{listed}"
        );
    }
    assert!(
        !listed
            .lines()
            .any(|l| l.starts_with("tests/") || l.starts_with("../")),
        "nothing that needs the repository: {listed}"
    );
    let manifest = fs::read_to_string(repository().join("worker/Cargo.toml")).unwrap();
    assert!(
        manifest.contains("name = \"server-starter-worker\""),
        "{manifest}"
    );
    let workspace = fs::read_to_string(repository().join("Cargo.toml")).unwrap();
    let version = workspace
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the workspace version");
    let minor: Vec<&str> = version.split('.').take(2).collect();
    let wanted = format!("server-starter-worker = \"{}\"", minor.join("."));
    let block = readme_block(README_DEPENDENCY);
    assert_eq!(
        block.get(1).map(String::as_str),
        Some(wanted.as_str()),
        "{block:?}"
    );
}
