//! deploy/kubernetes/: the manifests parse (PyYAML, from Debian's python3-yaml, through
//! tests/deploy/kubernetes_facts.py) and say what the README promises: exec probes on
//! `start_server --check` asking the control socket that the container's start_server opens,
//! `--reload-on-change` on the mounted ConfigMap, a grace period longer than start_server's own
//! shutdown, and the hello_worker image's ENTRYPOINT, with only options start_server has.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::bin;

const MANIFESTS: &str = "deploy/kubernetes";
const CONTAINERFILE: &str = "deploy/container/hello_worker.Containerfile";
const DEPLOYMENT: &str = "hello-server-starter";
const CONFIGMAP: &str = "hello-server-starter-config";
const CONTAINER: &str = "hello-server-starter.container.hello";
/// What start_server needs between its workers' last signal (or KILL) and its exit: reaping,
/// removing its files; generous, it is not a measurement.
const EXIT_MARGIN_SECS: u64 = 5;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The facts the script prints, NAME → its values in order.
struct Facts(HashMap<String, Vec<String>>);

impl Facts {
    fn of_manifests() -> Facts {
        let mut manifests: Vec<_> = fs::read_dir(repo().join(MANIFESTS))
            .expect("deploy/kubernetes/")
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .collect();
        manifests.sort();
        let output = Command::new("python3")
            .arg(repo().join("tests/deploy/kubernetes_facts.py"))
            .args(&manifests)
            .output()
            .expect("this test needs python3 (apt-get install python3 python3-yaml)");
        assert!(
            output.status.success(),
            "the manifests do not parse (python3-yaml installed?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut facts: HashMap<String, Vec<String>> = HashMap::new();
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let (name, value) = line.split_once('\t').expect("NAME<TAB>VALUE");
            facts
                .entry(name.to_string())
                .or_default()
                .push(value.to_string());
        }
        Facts(facts)
    }

    fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    fn one(&self, name: &str) -> &str {
        match self.all(name) {
            [value] => value,
            other => panic!("expected one {name}, found {other:?}"),
        }
    }

    /// The container's command: start_server and its options, then `--` and the worker.
    fn command(&self) -> (&[String], &[String]) {
        split_at_dashes(self.all(&format!("{CONTAINER}.command")))
    }

    /// The value of `--NAME=VALUE` among start_server's options in the container's command.
    fn option(&self, name: &str) -> &str {
        let (options, _) = self.command();
        let prefix = format!("--{name}=");
        let values: Vec<_> = options
            .iter()
            .filter_map(|o| o.strip_prefix(&prefix))
            .collect();
        match values.as_slice() {
            [value] => value,
            other => panic!("expected one --{name}= in the command, found {other:?}"),
        }
    }

    fn seconds(&self, name: &str) -> u64 {
        let value = self.option(name);
        value
            .parse()
            .unwrap_or_else(|_| panic!("--{name}={value}: whole seconds expected"))
    }
}

/// `[start_server, options..., "--", worker...]` → (`[start_server, options...]`, `[worker...]`).
fn split_at_dashes(words: &[String]) -> (&[String], &[String]) {
    let dashes = words
        .iter()
        .position(|w| w == "--")
        .unwrap_or_else(|| panic!("no `--` before the worker in {words:?}"));
    (&words[..dashes], &words[dashes + 1..])
}

/// The words of the Containerfile's `ENTRYPOINT ["...", ...]`.
fn entrypoint(containerfile: &str) -> Vec<String> {
    let line = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT line");
    let list = line
        .trim()
        .strip_prefix("[\"")
        .and_then(|l| l.strip_suffix("\"]"))
        .expect("ENTRYPOINT in exec form, [\"...\", ...]");
    list.split("\", \"").map(str::to_string).collect()
}

/// `--name` of every `--name` or `--name=value` word.
fn option_names(words: &[String]) -> Vec<String> {
    words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap_or(w).to_string())
        .collect()
}

/// Whether `--name` appears in `help` as a whole option (not as the start of a longer one).
fn help_names(help: &str, name: &str) -> bool {
    help.match_indices(name).any(|(at, _)| {
        !help[at + name.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn the_manifests_are_a_configmap_and_a_deployment() {
    let facts = Facts::of_manifests();
    let mut objects = facts.all("object").to_vec();
    objects.sort();
    assert_eq!(
        objects,
        [
            format!("apps/v1 Deployment {DEPLOYMENT}"),
            format!("v1 ConfigMap {CONFIGMAP}"),
        ]
    );
    assert!(!facts.all(&format!("{CONFIGMAP}.data")).is_empty());
}

#[test]
fn both_probes_run_start_server_check_on_the_containers_control_socket() {
    let facts = Facts::of_manifests();
    let (options, _) = facts.command();
    let control = facts.option("control");
    let expected = [
        options[0].clone(),
        "--check".to_string(),
        format!("--control={control}"),
    ];
    for probe in ["readinessProbe", "livenessProbe"] {
        // Not tcpSocket: start_server's socket accepts connections with no worker behind it.
        assert_eq!(facts.one(&format!("{CONTAINER}.{probe}.handler")), "exec");
        assert_eq!(facts.all(&format!("{CONTAINER}.{probe}.exec")), expected);
    }
    // The socket's directory is an emptyDir mounted in the container: writable, and the same
    // for the probes, which run in the container.
    let directory = Path::new(control).parent().unwrap().to_str().unwrap();
    let mount = facts
        .all(&format!("{CONTAINER}.mount"))
        .iter()
        .find_map(|m| m.strip_suffix(&format!(" {directory}")))
        .unwrap_or_else(|| panic!("nothing mounted at {directory}"))
        .to_string();
    assert!(
        facts
            .all(&format!("{DEPLOYMENT}.volume"))
            .contains(&format!("{mount} emptyDir")),
        "{mount} is not an emptyDir"
    );
}

#[test]
fn the_configmap_is_mounted_where_reload_on_change_points() {
    let facts = Facts::of_manifests();
    let watched = facts.option("reload-on-change");
    let mount = facts
        .all(&format!("{CONTAINER}.mount"))
        .iter()
        .find_map(|m| m.strip_suffix(&format!(" {watched}")))
        .unwrap_or_else(|| panic!("nothing mounted at {watched} (a subPath mount never updates)"))
        .to_string();
    assert!(
        facts
            .all(&format!("{DEPLOYMENT}.volume"))
            .contains(&format!("{mount} configMap {CONFIGMAP}")),
        "{watched} is not the ConfigMap {CONFIGMAP}"
    );
}

#[test]
fn the_grace_period_outlasts_shutdown_delay_and_kill_old_timeout() {
    let facts = Facts::of_manifests();
    let grace: u64 = facts
        .one(&format!("{DEPLOYMENT}.terminationGracePeriodSeconds"))
        .parse()
        .expect("whole seconds");
    let (delay, timeout) = (
        facts.seconds("shutdown-delay"),
        facts.seconds("kill-old-timeout"),
    );
    assert!(
        grace > delay + timeout + EXIT_MARGIN_SECS,
        "terminationGracePeriodSeconds {grace} <= --shutdown-delay {delay} + \
         --kill-old-timeout {timeout} + {EXIT_MARGIN_SECS}"
    );
    // --shutdown-delay replaces a preStop hook (a scratch image has no sleep to run).
    assert!(facts.all(&format!("{CONTAINER}.lifecycle")).is_empty());
}

#[test]
fn the_command_is_the_hello_worker_images_entrypoint_with_options_added() {
    let facts = Facts::of_manifests();
    let containerfile = fs::read_to_string(repo().join(CONTAINERFILE)).expect("Containerfile");
    let image = entrypoint(&containerfile);
    let (image_options, image_worker) = split_at_dashes(&image);
    let (options, worker) = facts.command();
    assert_eq!(options[0], image_options[0], "start_server's path");
    assert_eq!(worker, image_worker, "the worker");
    for option in &image_options[1..] {
        assert!(
            options.contains(option),
            "the image's {option} is missing from the Deployment's command {options:?}"
        );
    }
    assert!(
        facts.all(&format!("{CONTAINER}.args")).is_empty(),
        "args would go after the worker's `--`"
    );
    let port = facts.option("port");
    assert_eq!(facts.one(&format!("{CONTAINER}.port")), port);
    assert!(containerfile.contains(&format!("\nEXPOSE {port}\n")));
}

#[test]
fn every_start_server_option_of_the_manifests_is_in_help() {
    let facts = Facts::of_manifests();
    let (options, _) = facts.command();
    let mut used = option_names(&options[1..]);
    for probe in ["readinessProbe", "livenessProbe"] {
        used.extend(option_names(
            &facts.all(&format!("{CONTAINER}.{probe}.exec"))[1..],
        ));
    }
    used.sort();
    used.dedup();
    let output = Command::new(bin()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let unknown: Vec<_> = used.iter().filter(|o| !help_names(&help, o)).collect();
    assert!(unknown.is_empty(), "start_server --help has no {unknown:?}");
}
