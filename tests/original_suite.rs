//! Server::Starter 0.35's own test suite, run against this binary.
//!
//! The test files are not part of this repository: they come from Debian's source package
//! (`apt-get source --download-only libserver-starter-perl`, which needs a `deb-src` entry),
//! fetched once into `target/original-suite/`. Each file runs with `prove` from the unpacked
//! source, as the original runs them; tests/perl/ServerStarterAdapter.pm turns the files' calls
//! of `Server::Starter::start_server`, `restart_server` and `stop_server` into runs of this
//! binary. The files that test the module's internals (00, 08, 09) run without it.

mod common;

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::TempDir;

/// The Debian source package holding the original's `t/`.
const PACKAGE: &str = "libserver-starter-perl";

/// The Perl modules the test files use, and the Debian packages that provide them.
const PERL_MODULES: &[(&str, &str)] = &[
    ("Test::TCP", "libtest-tcp-perl"),
    ("Net::EmptyPort", "libtest-tcp-perl"),
    ("Test::SharedFork", "libtest-sharedfork-perl"),
    ("Test::Requires", "libtest-requires-perl"),
    ("IO::Socket::IP", "perl"),
];

/// The test files sleep for fixed times (up to ~40 s for one file); this only catches a hang.
const FILE_DEADLINE: Duration = Duration::from_secs(300);

/// Where the download and the unpacked source are kept between runs.
fn cache_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("original-suite")
}

/// The unpacked source directory, fetched on first use; a missing prerequisite is an error
/// naming what to install or enable.
fn source_dir() -> &'static Result<PathBuf, String> {
    static SOURCE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SOURCE.get_or_init(|| {
        check_perl_prerequisites()?;
        let unpacked = cache_dir().join("source");
        if !unpacked.join("t").is_dir() {
            let tarball = download()?;
            unpack(&tarball, &unpacked)?;
        }
        Ok(unpacked)
    })
}

fn check_perl_prerequisites() -> Result<(), String> {
    let missing: Vec<&str> = PERL_MODULES
        .iter()
        .filter(|(module, _)| {
            !Command::new("perl")
                .args([format!("-M{module}"), "-e1".into()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    let has_prove = Command::new("prove")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut packages: Vec<&str> = missing;
    if !has_prove {
        packages.push("perl");
    }
    packages.dedup();
    if packages.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the original's test suite needs prove and its Perl modules: apt-get install {}",
            packages.join(" ")
        ))
    }
}

/// Runs `apt-get source --download-only` (once) and returns the orig tarball, which has `t/`.
/// The Debian part of the source package is not needed, so its failing to download is fine.
fn download() -> Result<PathBuf, String> {
    let dir = cache_dir().join("download");
    if let Some(tarball) = orig_tarball(&dir) {
        return Ok(tarball);
    }
    // Downloaded aside and moved in whole, so that a concurrent run never sees half a file.
    let scratch = cache_dir().join(format!("download-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    for d in [&dir, &scratch] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let output = Command::new("apt-get")
        .args(["source", "--download-only", PACKAGE])
        .current_dir(&scratch)
        .output();
    let fetched = orig_tarball(&scratch);
    let moved = fetched.and_then(|tarball| {
        let target = dir.join(tarball.file_name()?);
        fs::rename(&tarball, &target).ok().map(|()| target)
    });
    let _ = fs::remove_dir_all(&scratch);
    if let Some(tarball) = moved {
        return Ok(tarball);
    }
    let output = output.map_err(|e| {
        format!(
            "the original's test suite is fetched with apt-get source, which could not run: {e}"
        )
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("deb-src") {
        return Err(format!(
            "apt-get source {PACKAGE} needs a deb-src entry: add deb-src to the Types: line of \
             /etc/apt/sources.list.d/debian.sources, then apt-get update"
        ));
    }
    Err(format!(
        "apt-get source --download-only {PACKAGE} gave no orig tarball: {}",
        stderr.lines().last().unwrap_or("no message")
    ))
}

fn orig_tarball(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{PACKAGE}_")) && n.ends_with(".orig.tar.gz")
            })
        })
}

/// Unpacks the tarball's top directory to `target`, atomically (other test binaries may race).
fn unpack(tarball: &Path, target: &Path) -> Result<(), String> {
    let scratch = cache_dir().join(format!("unpack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(&scratch)
        .status()
        .map_err(|e| format!("cannot run tar to unpack {}: {e}", tarball.display()))?;
    if !status.success() {
        return Err(format!("tar could not unpack {}", tarball.display()));
    }
    let top = fs::read_dir(&scratch)
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(Result::ok)
        .map(|e| e.path())
        .ok_or_else(|| format!("{} is empty", tarball.display()))?;
    let renamed = fs::rename(&top, target);
    let _ = fs::remove_dir_all(&scratch);
    if renamed.is_err() && !target.join("t").is_dir() {
        return Err(format!(
            "cannot move the unpacked source to {}",
            target.display()
        ));
    }
    Ok(())
}

/// Runs `t/<name>.t` with prove from the original's source directory; with `adapter`, against
/// this binary. Fails with prove's whole output unless every test in the file passed, none
/// skipped, and (with `adapter`) this binary was what ran.
fn run_original(name: &str, adapter: bool) {
    let source = source_dir().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let file = format!("t/{name}.t");
    assert!(
        source.join(&file).is_file(),
        "{file} is not in the original's source at {}",
        source.display()
    );
    let scratch = TempDir::new();
    let output_path = scratch.path("prove.out");
    let runs_path = scratch.path("adapter.log");
    let output = File::create(&output_path).expect("create the output file");
    let mut prove = Command::new("prove");
    prove.args(["-v", "-I", "lib"]).current_dir(source);
    prove.env_remove("HARNESS_PERL_SWITCHES");
    if adapter {
        prove
            .arg("-I")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perl"))
            .env("HARNESS_PERL_SWITCHES", "-MServerStarterAdapter")
            .env("START_SERVER_UNDER_TEST", common::bin())
            .env("START_SERVER_ADAPTER_LOG", &runs_path);
    }
    prove
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("dup the output file"))
        .stderr(output)
        .process_group(0);
    let mut child = prove.spawn().expect("run prove");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for prove") {
            break Some(status);
        }
        if start.elapsed() > FILE_DEADLINE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the file left behind in prove's process group (workers of a failed test).
    // SAFETY: kill(2) on the process group created for prove.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let log = fs::read_to_string(&output_path).unwrap_or_default();
    let Some(status) = status else {
        panic!("{file} still running after {FILE_DEADLINE:?}:\n{log}");
    };
    assert!(status.success(), "{file} failed ({status}):\n{log}");
    let lower = log.to_lowercase();
    assert!(
        !lower.contains("skipped:") && !lower.contains("# skip"),
        "{file} skipped tests:\n{log}"
    );
    if adapter {
        let runs = fs::read_to_string(&runs_path).unwrap_or_default();
        assert!(
            runs.contains(common::bin()),
            "{file} passed without running {}:\n{log}",
            common::bin()
        );
    }
}

#[test]
fn original_00_base() {
    run_original("00-base", false);
}

#[test]
fn original_01_starter() {
    run_original("01-starter", true);
}

#[test]
fn original_02_startfail() {
    run_original("02-startfail", true);
}

#[test]
fn original_03_starter_unix() {
    run_original("03-starter-unix", true);
}

#[test]
fn original_04_starter_dir() {
    run_original("04-starter-dir", true);
}

#[test]
fn original_05_killolddelay() {
    run_original("05-killolddelay", true);
}

#[test]
fn original_06_autorestart() {
    run_original("06-autorestart", true);
}

#[test]
fn original_07_envdir() {
    run_original("07-envdir", true);
}

#[test]
fn original_08_wait3() {
    run_original("08-wait3", false);
}

#[test]
fn original_09_guard() {
    run_original("09-guard", false);
}

#[test]
fn original_10_bindaddr() {
    run_original("10-bindaddr", true);
}

#[test]
fn original_11_specified_fd() {
    run_original("11-specified-fd", true);
}

#[test]
fn original_12_stop() {
    run_original("12-stop", true);
}

#[test]
fn original_13_unix_daemonize() {
    run_original("13-unix-daemonize", true);
}

#[test]
fn original_14_without_port() {
    run_original("14-without-port", true);
}

#[test]
fn original_15_udp() {
    run_original("15-udp", true);
}
