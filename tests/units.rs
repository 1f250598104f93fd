//! The unit files in `systemd/`, which the packages install: each passes `systemd-analyze verify`
//! of systemd 252 (Debian 12's, the oldest release tested here: this host's) and of systemd 257
//! (the harness's container, `tests/systemd-container/run-in-systemd`), and both packages'
//! file lists name every one of them and nothing that is gone. What the units do under a real
//! systemd is in `tests/systemd_e2e.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The unit files shipped in `systemd/` (their names; the directory has no subdirectories).
fn shipped_units() -> Vec<String> {
    let mut units: Vec<String> = fs::read_dir(Path::new(ROOT).join("systemd"))
        .expect("read systemd/")
        .map(|entry| entry.expect("read systemd/").path())
        .inspect(|path| assert!(path.is_file(), "{} is not a file", path.display()))
        .filter(|path| {
            path.extension()
                .is_some_and(|e| e == "service" || e == "socket")
        })
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    units.sort();
    assert_eq!(
        units,
        [
            "server-starter-example.service",
            "server-starter-example.socket",
            "server-starter@.service",
            "server-starter@.socket"
        ],
        "a unit was added or removed: this list, the packages' lists and the docs go together"
    );
    units
}

/// Runs `command`; its status, and stdout and stderr together.
fn run(command: &mut Command) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn every_shipped_unit_verifies_clean_with_systemd_252() {
    let (_, version) = run(Command::new("systemd-analyze").arg("--version"));
    let version = version.lines().next().unwrap_or_default();
    assert!(
        version.starts_with("systemd 252 "),
        "this test verifies the units against systemd 252 (Debian 12's, the oldest release the \
         units are tested with) with the host's systemd-analyze, and this host has {version:?}: \
         run it on Debian 12"
    );
    // A root of its own: the host's units (the targets the units' default dependencies name),
    // the binary under test as /usr/bin/start_server, and the units in /etc/systemd/system.
    let tmp = TempDir::new();
    let root = tmp.path("root");
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    let (copied, text) = run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.join("usr/lib/systemd/")));
    assert!(copied, "copy the host's units: {text}");
    fs::copy(bin(), root.join("usr/bin/start_server")).unwrap();
    let units = shipped_units();
    for unit in &units {
        fs::copy(
            Path::new(ROOT).join("systemd").join(unit),
            root.join("etc/systemd/system").join(unit),
        )
        .unwrap();
    }
    // Documentation=man:start_server(1) is checked with `man`, on the host: the page of the
    // binary under test, not whichever start_server(1) the host has.
    let man = tmp.path("man");
    fs::create_dir_all(man.join("man1")).unwrap();
    let (made, page) = run(Command::new(bin()).args(["--generate", "man"]));
    assert!(made, "{page}");
    fs::write(man.join("man1/start_server.1"), page).unwrap();
    for unit in &units {
        let (ok, text) = run(Command::new("systemd-analyze")
            .env("MANPATH", &man)
            .arg(format!("--root={}", root.display()))
            .arg("verify")
            .arg(format!("/etc/systemd/system/{unit}")));
        assert!(
            ok && text.is_empty(),
            "systemd 252: systemd-analyze verify {unit}: {text}"
        );
    }
}

#[test]
fn every_shipped_unit_verifies_clean_with_systemd_257() {
    let tmp = TempDir::new();
    fs::copy(bin(), tmp.path("start_server")).expect("copy the binary");
    fs::create_dir_all(tmp.path("units")).unwrap();
    let units = shipped_units();
    for unit in &units {
        fs::copy(
            Path::new(ROOT).join("systemd").join(unit),
            tmp.path("units").join(unit),
        )
        .unwrap();
    }
    // The container has no man pages (the man: reference is checked by the systemd 252 test).
    let output = run_in_systemd(
        &tmp,
        &format!(
            r#"
install -m 755 /src/start_server /usr/bin/start_server
version=$(systemctl --version | head -1)
[[ $version == "systemd 257 "* ]] || fail "the harness runs $version, not systemd 257"
for unit in {units}; do
  out=$(systemd-analyze verify --man=no "/src/units/$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
  echo "verified: $unit"
done
"#,
            units = units.join(" ")
        ),
    );
    for unit in &units {
        assert!(
            output.contains(&format!("verified: {unit}")),
            "{unit} not verified:\n{output}"
        );
    }
}

#[test]
fn both_packages_install_every_shipped_file_and_nothing_that_is_gone() {
    let manifest = fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let (deb, rpm) = manifest
        .split_once("[package.metadata.generate-rpm]")
        .expect("Cargo.toml has [package.metadata.generate-rpm]");
    let deb = deb
        .split_once("[package.metadata.deb]")
        .expect("Cargo.toml has [package.metadata.deb]")
        .1;
    // The sources a list names under systemd/.
    let sources = |list: &str| -> Vec<PathBuf> {
        list.split('"')
            .filter(|s| s.starts_with("systemd/"))
            .map(PathBuf::from)
            .collect()
    };
    let mut shipped: Vec<PathBuf> = fs::read_dir(Path::new(ROOT).join("systemd"))
        .unwrap()
        .map(|e| Path::new("systemd").join(e.unwrap().file_name()))
        .collect();
    shipped.sort();
    // The units and the template's example env file.
    assert_eq!(shipped.len(), shipped_units().len() + 1, "{shipped:?}");
    assert!(shipped.contains(&PathBuf::from("systemd/server-starter.env.example")));
    for (name, list) in [("deb", deb), ("generate-rpm", rpm)] {
        let mut named = sources(list);
        named.sort();
        assert_eq!(
            named, shipped,
            "[package.metadata.{name}] must install every file of systemd/ and no other"
        );
    }
}
