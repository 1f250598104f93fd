//! The Debian and RPM packages: same files, lintian- and rpmlint-clean, and each installed (by
//! dpkg, by rpm), used, upgraded in place and removed under a real systemd, in one scenario for
//! both; the man page's sections and lint. Needs cargo-deb, cargo-generate-rpm, rpm, lintian,
//! rpmlint, groff and mandoc (installed by `.ci/run`), and root, systemd-nspawn and debootstrap
//! for the scenarios (`tests/systemd-container/run-in-systemd`, whose container has rpm).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Builds both packages from the binary under test; returns (deb, rpm).
fn build(out: &Path) -> (PathBuf, PathBuf) {
    let output = Command::new(format!("{ROOT}/packaging/build-packages.sh"))
        .args(["--binary", bin(), "--out"])
        .arg(out)
        .args(["--maintainer", "Package Tests <package-tests@example.org>"])
        .output()
        .expect("run packaging/build-packages.sh");
    assert!(output.status.success(), "{output:?}");
    let find = |ext: &str| {
        fs::read_dir(out)
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} in {}", out.display()))
    };
    (find("deb"), find("rpm"))
}

fn stdout(command: &mut Command) -> String {
    let output = command.output().expect("run a packaging tool");
    assert!(output.status.success(), "{command:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn deb_and_rpm_install_the_same_files() {
    let tmp = TempDir::new();
    let (deb, rpm) = build(&tmp.0);
    let deb_files: BTreeSet<String> = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb))
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    let rpm_files: BTreeSet<String> = stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]"])
            .arg(&rpm),
    )
    .lines()
    .filter(|l| l.starts_with('-'))
    .filter_map(|l| l.split_whitespace().last())
    .map(str::to_string)
    .collect();
    // Where the two distributions differ: zsh's completion directory, and what only dpkg
    // reads (Debian's changelog of the package, lintian's overrides).
    let zsh = "/usr/share/zsh/vendor-completions/_start_server";
    let deb_only = BTreeSet::from([
        "/usr/share/doc/server-starter/changelog.Debian.gz".to_string(),
        "/usr/share/lintian/overrides/server-starter".to_string(),
    ]);
    let deb_as_rpm: BTreeSet<String> = deb_files
        .difference(&deb_only)
        .map(|f| match f.as_str() {
            path if path == zsh => "/usr/share/zsh/site-functions/_start_server".to_string(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(deb_as_rpm, rpm_files);
    for expected in [
        "/usr/bin/start_server",
        "/usr/share/man/man1/start_server.1.gz",
        "/usr/share/bash-completion/completions/start_server",
        zsh,
        "/usr/share/fish/vendor_completions.d/start_server.fish",
        "/usr/lib/systemd/system/server-starter@.socket",
        "/usr/lib/systemd/system/server-starter@.service",
        "/usr/lib/systemd/system/server-starter-example.socket",
        "/usr/lib/systemd/system/server-starter-example.service",
        "/usr/share/doc/server-starter/README.md.gz",
        "/usr/share/doc/server-starter/changelog.gz",
        "/usr/share/doc/server-starter/copyright",
    ] {
        assert!(
            deb_files.contains(expected),
            "{expected} missing: {deb_files:#?}"
        );
    }
    // Neither names another project as its home, nor a placeholder as its maintainer.
    let control = stdout(Command::new("dpkg-deb").args(["-f"]).arg(&deb));
    assert!(!control.contains("Homepage:"), "{control}");
    assert!(
        control.contains("Maintainer: Package Tests <package-tests@example.org>"),
        "{control}"
    );
    let header = stdout(Command::new("rpm").args(["-qip"]).arg(&rpm));
    assert!(!header.contains("metacpan"), "{header}");
    assert!(!header.contains(".invalid"), "{header}");
    let conflicts = stdout(Command::new("rpm").args(["-qp", "--conflicts"]).arg(&rpm));
    assert!(conflicts.contains("perl-Server-Starter"), "{conflicts}");
    // `rpm -qlp` (what operators run) lists them too.
    let listed = stdout(Command::new("rpm").arg("-qlp").arg(&rpm));
    for file in &rpm_files {
        assert!(listed.lines().any(|l| l == file), "{file} not in rpm -qlp");
    }
}

#[test]
fn the_deb_is_lintian_clean() {
    let tmp = TempDir::new();
    let (deb, _) = build(&tmp.0);
    let output = Command::new("lintian")
        .arg(&deb)
        .output()
        .expect("lintian is needed (apt-get install lintian)");
    let report = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn the_rpm_is_rpmlint_clean() {
    let tmp = TempDir::new();
    let (_, rpm) = build(&tmp.0);
    let output = Command::new("rpmlint")
        .arg("--config")
        .arg(format!("{ROOT}/packaging/rpm/rpmlint.toml"))
        .arg(&rpm)
        .output()
        .expect("rpmlint is needed (apt-get install rpmlint)");
    let report = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(": E: ") || l.contains(": W: "))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{report}");
    assert!(report.contains("0 errors, 0 warnings"), "{report}");
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn man_page_and_completions_come_from_the_option_definitions() {
    let man = stdout(Command::new(bin()).args(["--generate", "man"]));
    assert!(man.contains(".TH START_SERVER 1"), "{man}");
    let help = stdout(Command::new(bin()).arg("--help"));
    let options: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .collect();
    assert!(options.len() > 20, "{options:?}");
    for option in options.iter().copied().chain(["--generate"]) {
        let roff = option.replace('-', "\\-");
        assert!(man.contains(&roff), "{option} missing from the man page");
    }
    let bash = stdout(Command::new(bin()).args(["--generate", "bash"]));
    assert!(bash.contains("--kill-old-timeout"), "{bash}");
    let zsh = stdout(Command::new(bin()).args(["--generate", "zsh"]));
    assert!(zsh.starts_with("#compdef start_server"), "{zsh}");
    let fish = stdout(Command::new(bin()).args(["--generate", "fish"]));
    assert!(fish.contains("complete -c start_server"), "{fish}");
}

#[test]
fn man_page_has_the_standard_sections_and_lints_clean() {
    let tmp = TempDir::new();
    let page = tmp.path("start_server.1");
    fs::write(
        &page,
        stdout(Command::new(bin()).args(["--generate", "man"])),
    )
    .unwrap();
    let man = fs::read_to_string(&page).unwrap();
    let sections: Vec<&str> = man
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(
        sections,
        [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "ENVIRONMENT",
            "SIGNALS",
            "FILES",
            "NOTES",
            "EXAMPLES",
            "SEE ALSO"
        ]
    );
    // Both formatters, every warning on: any output at all is a defect of the page.
    let groff = Command::new("groff")
        .args(["-ww", "-man", "-Tutf8", "-z"])
        .arg(&page)
        .output()
        .expect("groff is needed (apt-get install groff)");
    assert!(groff.status.success(), "{groff:?}");
    assert_eq!(String::from_utf8_lossy(&groff.stderr), "");
    let mandoc = Command::new("mandoc")
        .args(["-T", "lint", "-W", "style"])
        .arg(&page)
        .output()
        .expect("mandoc is needed (apt-get install mandoc)");
    let report = String::from_utf8_lossy(&mandoc.stdout).into_owned()
        + &String::from_utf8_lossy(&mandoc.stderr);
    assert_eq!(report, "", "{mandoc:?}");
    assert!(mandoc.status.success(), "{mandoc:?}");
}

/// The man page's date is the release date of its version in CHANGELOG.md.
#[test]
fn man_page_date_is_the_release_date_in_the_changelog() {
    let man = stdout(Command::new(bin()).args(["--generate", "man"]));
    let changelog = fs::read_to_string(format!("{ROOT}/CHANGELOG.md")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let heading = format!("## [{version}] - ");
    let date = changelog
        .lines()
        .find_map(|l| l.strip_prefix(heading.as_str()))
        .unwrap_or_else(|| panic!("no {heading}DATE in CHANGELOG.md"));
    let title = man.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert!(title.contains(&format!(" {date} ")), "{title} vs {date}");
}

/// A package format: how the scenario under systemd installs, upgrades and removes a package,
/// and what it checks of this format alone.
struct Format {
    ext: &'static str,
    install: &'static str,
    upgrade: &'static str,
    remove: &'static str,
    before_install: &'static str,
    after_install: &'static str,
    after_remove: &'static str,
}

const DEB: Format = Format {
    ext: "deb",
    install: "dpkg -i",
    upgrade: "dpkg -i",
    remove: "dpkg -r server-starter",
    // Stand-in for libserver-starter-perl's start_server, which the package must divert, not
    // clobber.
    before_install: r#"printf '#!/bin/sh\necho perl start_server\n' > /usr/bin/start_server; chmod 755 /usr/bin/start_server"#,
    after_install: r#"[[ $(/usr/bin/start_server.perl) == "perl start_server" ]] || fail "the other start_server was not diverted""#,
    after_remove: r#"[[ $(/usr/bin/start_server) == "perl start_server" ]] || fail "the diverted start_server was not given back""#,
};

/// `--nodeps`: the package names its dependencies as Fedora does (/bin/sh, systemd), and the
/// system is Debian, whose packages rpm does not know.
const RPM: Format = Format {
    ext: "rpm",
    install: "rpm -i --nodeps",
    upgrade: "rpm -U --nodeps",
    remove: "rpm -e --nodeps server-starter",
    before_install: "",
    after_install: r#"rpm -q server-starter | grep -q '^server-starter-.*-1\.' || fail "rpm -q: $(rpm -q server-starter)""#,
    after_remove: r#"if rpm -q server-starter; then fail "still installed"; fi
[[ ! -e /usr/bin/start_server ]] || fail "/usr/bin/start_server left behind""#,
};

/// Builds the package of `format` (revision `revision`) from `binary` into `dir`; its path.
fn build_one(format: &Format, binary: &Path, dir: &Path, revision: u32) -> PathBuf {
    let output = Command::new(format!("{ROOT}/packaging/build-packages.sh"))
        .args(["--only", format.ext, "--binary"])
        .arg(binary)
        .arg("--out")
        .arg(dir)
        .args(["--revision", &revision.to_string()])
        .args(["--maintainer", "Package Tests <package-tests@example.org>"])
        .output()
        .expect("run packaging/build-packages.sh");
    assert!(output.status.success(), "{output:?}");
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.extension().is_some_and(|e| e == format.ext))
        .unwrap_or_else(|| panic!("no .{} in {}", format.ext, dir.display()))
}

/// The life of a package under a real systemd, the same for both formats: installed, an
/// instance of the template enabled, started by its socket, reloaded; a second build of the
/// package (a newer binary, the package's revision 2) installed over it while the instance
/// runs, which upgrades the instance in place (same MainPID, same worker, `--status` says the
/// new version); the package removed, which stops the instance and leaves no file and no
/// process. Only systemctl talks to the units: their contents may change.
fn package_lifecycle_under_systemd(format: &Format) {
    let tmp = TempDir::new();
    let ext = format.ext;
    fs::create_dir_all(tmp.path("build1")).unwrap();
    let first = build_one(format, Path::new(bin()), &tmp.path("build1"), 1);
    fs::rename(&first, tmp.path(&format!("first.{ext}"))).unwrap();
    fs::create_dir_all(tmp.path("build2")).unwrap();
    install(&tmp.path("build2/start_server"), &newer_build());
    let second = build_one(
        format,
        &tmp.path("build2/start_server"),
        &tmp.path("build2"),
        2,
    );
    fs::rename(&second, tmp.path(&format!("second.{ext}"))).unwrap();
    tmp.script("worker.py", HTTP_WORKER);
    let Format {
        install,
        upgrade,
        remove,
        before_install,
        after_install,
        after_remove,
        ..
    } = format;
    let old = env!("CARGO_PKG_VERSION");
    let new = new_version();
    run_in_systemd(
        &tmp,
        &format!(
            r#"
{before_install}
{install} /src/first.{ext}
{after_install}
[[ $(/usr/bin/start_server --version) == "start_server {old}" ]] || fail "ours is not /usr/bin/start_server"
if command -v man >/dev/null; then man -w start_server || fail "man does not find the page"
else zcat /usr/share/man/man1/start_server.1.gz | grep -q '^.TH START_SERVER 1' || fail "no man page"; fi
install -m 755 /src/worker.py /usr/local/bin/demo-app
mkdir -p /etc/server-starter
# A control socket for --status: the unit's own if its ExecStart sets one, else one of ours.
options=--interval=0.5
grep -q -e --control= /usr/lib/systemd/system/server-starter@.service \
  || options+=" --control=/run/server-starter-demo.control"
printf 'APP_COMMAND=/usr/local/bin/demo-app\nSTART_SERVER_OPTIONS=%s\n' "$options" > /etc/server-starter/demo.env
systemctl enable --now server-starter@demo.socket
socket=$(systemctl show -P Listen server-starter@demo.socket | sed -n 's/^\(\/[^ ]*\) .*/\1/p' | head -1)
[[ -S $socket ]] || fail "the socket unit listens on no unix socket: $(systemctl show -P Listen server-starter@demo.socket)"
ask() {{ curl -sf --max-time 30 --unix-socket "$socket" http://localhost/; }}
first=$(ask) || fail "no answer through the instance's socket"
[[ $first == *gen=1* ]] || fail "first: $first"
wait_for 'systemctl is-active -q server-starter@demo.service'
systemctl reload server-starter@demo.service
second=$(ask) || fail "no answer after the reload"
[[ $second == *gen=2* ]] || fail "after reload: $second"

main=$(systemctl show -P MainPID server-starter@demo.service)
control=$(tr '\0' '\n' </proc/$main/cmdline | sed -n 's/^--control=//p' | tail -1)
[[ -S $control ]] || fail "no control socket (start_server's command line: $(tr '\0' ' ' </proc/$main/cmdline))"
said=$(/usr/bin/start_server --status --control="$control") || fail "--status: $said"
grep -qF "start_server {old} (pid $main)" <<<"$said" || fail "--status before the upgrade: $said"
worker=$(field pid "$second")
out=$({upgrade} /src/second.{ext} 2>&1) || fail "the upgrade failed: $out"
echo "$out"
grep -qF "server-starter@demo.service upgraded in place (pid $main)" <<<"$out" || fail "the package did not upgrade the instance in place"
[[ $(systemctl show -P MainPID server-starter@demo.service) == "$main" ]] || fail "MainPID changed"
[[ $(readlink /proc/$main/exe) == /usr/bin/start_server ]] || fail "runs $(readlink /proc/$main/exe)"
[[ $(systemctl show -P NRestarts server-starter@demo.service) == 0 ]] || fail "the unit was restarted"
systemctl is-active -q server-starter@demo.service || fail "the unit is not active"
third=$(ask) || fail "no answer after the upgrade"
[[ $(field pid "$third") == "$worker" ]] || fail "the worker changed: $second / $third"
said=$(/usr/bin/start_server --status --control="$control") || fail "--status: $said"
grep -qF "start_server {new} (pid $main)" <<<"$said" || fail "--status after the upgrade: $said"
systemctl reload server-starter@demo.service
fourth=$(ask) || fail "no answer after a reload of the upgraded instance"
[[ $fourth == *gen=3* ]] || fail "after the upgrade and a reload: $fourth"

{remove}
if pgrep -f /usr/local/bin/demo-app; then fail "workers left behind"; fi
if pgrep -x start_server; then fail "start_server left behind"; fi
if systemctl is-active -q server-starter@demo.socket; then fail "the socket unit still listens"; fi
[[ ! -e /usr/lib/systemd/system/server-starter@.service ]] || fail "unit files left behind"
[[ ! -e /usr/share/man/man1/start_server.1.gz ]] || fail "the man page left behind"
{after_remove}
"#
        ),
    );
}

#[test]
fn the_deb_installs_serves_reloads_upgrades_in_place_and_removes_cleanly_under_systemd() {
    package_lifecycle_under_systemd(&DEB);
}

#[test]
fn the_rpm_installs_serves_reloads_upgrades_in_place_and_removes_cleanly_under_systemd() {
    package_lifecycle_under_systemd(&RPM);
}

/// The text of shell function `name` in `script`, from its line to the closing brace.
fn shell_function(script: &str, name: &str) -> String {
    let start = script
        .find(&format!("{name}() {{"))
        .unwrap_or_else(|| panic!("no {name} in {script}"));
    let end = script[start..].find("\n}\n").expect("end of the function") + start;
    script[start..end].to_string()
}

#[test]
fn the_rpm_upgrades_running_instances_in_posttrans_as_the_deb_does() {
    let tmp = TempDir::new();
    let (_, rpm) = build(&tmp.0);
    let scripts = stdout(Command::new("rpm").args(["-qp", "--scripts"]).arg(&rpm));
    let posttrans = scripts
        .split_once("posttrans scriptlet")
        .map(|(_, rest)| rest)
        .expect("the rpm has a posttrans scriptlet");
    assert!(posttrans.contains("upgrade_in_place || :"), "{scripts}");
    let postinst = fs::read_to_string(format!("{ROOT}/packaging/debian/postinst")).unwrap();
    assert_eq!(
        shell_function(posttrans, "upgrade_in_place"),
        shell_function(&postinst, "upgrade_in_place"),
        "the .deb and the .rpm upgrade running instances alike"
    );
}

/// What crates.io asks of a crate (description and license, else it refuses the upload) and
/// shows (readme, keywords, categories, rust-version), for both crates of the workspace; `cargo
/// publish --workspace --dry-run` in .ci/run checks the rest (packaging, building from the
/// packages) but only warns about these.
#[test]
fn both_crates_have_the_metadata_a_registry_asks_for() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let metadata: serde_json::Value = serde_json::from_str(&stdout(
        Command::new(cargo)
            .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
            .current_dir(ROOT),
    ))
    .expect("cargo metadata's JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let mut names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["server-starter", "server-starter-worker"]);
    for package in packages {
        let name = &package["name"];
        for field in ["description", "license", "readme", "rust_version"] {
            assert!(
                package[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: no {field}"
            );
        }
        let keywords = package["keywords"].as_array().expect("keywords");
        // crates.io: at most 5, each at most 20 characters, ASCII letters, digits, - and _.
        assert!((1..=5).contains(&keywords.len()), "{name}: {keywords:?}");
        for keyword in keywords.iter().filter_map(|k| k.as_str()) {
            assert!(
                keyword.len() <= 20
                    && keyword.starts_with(|c: char| c.is_ascii_alphabetic())
                    && keyword
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{name}: keyword {keyword:?}"
            );
        }
        let categories = package["categories"].as_array().expect("categories");
        assert!(
            (1..=5).contains(&categories.len()),
            "{name}: {categories:?}"
        );
        let manifest = Path::new(package["manifest_path"].as_str().unwrap());
        let readme = manifest
            .parent()
            .unwrap()
            .join(package["readme"].as_str().unwrap());
        assert!(readme.is_file(), "{name}: no {}", readme.display());
    }
    // docs.rs builds the library's documentation for Linux only (it does not build elsewhere).
    let worker = packages
        .iter()
        .find(|p| p["name"] == "server-starter-worker")
        .unwrap();
    assert_eq!(
        worker["metadata"]["docs"]["rs"]["targets"],
        serde_json::json!(["x86_64-unknown-linux-gnu"])
    );
}
