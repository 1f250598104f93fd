//! Container images: start_server and the demo worker built static (no dynamic loader: they run
//! in a root that holds nothing else), and what a Containerfile of deploy/container/ says.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target of the static builds (README, "In a container").
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where the static builds go: a target directory of their own, so that the nested cargo does
/// not wait for the lock of the `cargo test` running us.
pub fn static_dir() -> PathBuf {
    repo().join("target/static")
}

/// start_server and examples/hello_worker, built static (the README's command, dev profile),
/// once per test binary (incremental afterwards).
pub fn static_binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run_build(
            Command::new(cargo)
                .current_dir(repo())
                .args(["build", "--target", TARGET, "--bin", "start_server"])
                .args(["--example", "hello_worker"])
                .env("CARGO_TARGET_DIR", static_dir())
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env_remove("CARGO_ENCODED_RUSTFLAGS"),
        );
        let out = static_dir().join(TARGET).join("debug");
        let built = (out.join("start_server"), out.join("examples/hello_worker"));
        assert_static(&built.0);
        assert_static(&built.1);
        built
    })
}

/// Runs a build command, failing the test with its errors.
pub fn run_build(command: &mut Command) {
    let output = command.output().expect("run the build");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// No program header asks for a dynamic loader (PT_INTERP): the binary runs in an empty root.
pub fn assert_static(path: &Path) {
    let elf = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is not a 64-bit ELF",
        path.display()
    );
    let word = |at: usize, len: usize| {
        elf[at..at + len]
            .iter()
            .rev()
            .fold(0usize, |n, &b| n << 8 | b as usize)
    };
    let (offset, size, count) = (word(0x20, 8), word(0x36, 2), word(0x38, 2));
    for header in (0..count).map(|i| offset + i * size) {
        const PT_INTERP: usize = 3;
        assert_ne!(
            word(header, 4),
            PT_INTERP,
            "{} needs a dynamic loader",
            path.display()
        );
    }
}

/// A Containerfile of deploy/container/, read as the tests need it.
pub struct Containerfile {
    pub path: &'static str,
    pub text: String,
}

impl Containerfile {
    /// `path` is relative to the repository.
    pub fn read(path: &'static str) -> Containerfile {
        let text =
            fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
        Containerfile { path, text }
    }

    /// The instructions (comments and blank lines left out) of the final stage, from its `FROM`.
    pub fn final_stage(&self) -> Vec<&str> {
        let lines: Vec<&str> = self
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let from = lines
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .unwrap_or_else(|| panic!("{}: no FROM", self.path));
        lines[from..].to_vec()
    }

    /// The one line of the final stage starting with `instruction` and a space, without them.
    pub fn instruction(&self, instruction: &str) -> &str {
        let prefix = format!("{instruction} ");
        let found: Vec<&str> = self
            .final_stage()
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        match found.as_slice() {
            [line] => line,
            other => panic!("{}: expected one {instruction}, found {other:?}", self.path),
        }
    }

    /// The words of `ENTRYPOINT ["...", ...]`.
    pub fn entrypoint(&self) -> Vec<String> {
        exec_form(self.instruction("ENTRYPOINT"), self.path)
    }

    /// `HEALTHCHECK [--option=value ...] CMD ["...", ...]`: its options (name → value) and the
    /// words of its command.
    pub fn healthcheck(&self) -> (Vec<(String, String)>, Vec<String>) {
        let line = self.instruction("HEALTHCHECK");
        let (options, command) = line
            .split_once("CMD ")
            .unwrap_or_else(|| panic!("{}: HEALTHCHECK without CMD", self.path));
        let options = options
            .split_whitespace()
            .map(|o| {
                let (name, value) = o
                    .strip_prefix("--")
                    .and_then(|o| o.split_once('='))
                    .unwrap_or_else(|| panic!("{}: HEALTHCHECK option {o}", self.path));
                (name.to_string(), value.to_string())
            })
            .collect();
        (options, exec_form(command, self.path))
    }
}

/// The words of an instruction in exec form, `["...", ...]`.
fn exec_form(list: &str, path: &str) -> Vec<String> {
    let inner = list
        .trim()
        .strip_prefix("[\"")
        .and_then(|l| l.strip_suffix("\"]"))
        .unwrap_or_else(|| panic!("{path}: {list} is not in exec form, [\"...\", ...]"));
    inner.split("\", \"").map(str::to_string).collect()
}

/// `[start_server, options..., "--", worker...]` → (`[start_server, options...]`, `[worker...]`).
pub fn split_at_dashes(words: &[String]) -> (&[String], &[String]) {
    let dashes = words
        .iter()
        .position(|w| w == "--")
        .unwrap_or_else(|| panic!("no `--` before the worker in {words:?}"));
    (&words[..dashes], &words[dashes + 1..])
}
