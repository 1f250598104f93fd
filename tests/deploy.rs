//! deploy/: the Kubernetes manifests are valid for Kubernetes' own schemas (`kubernetes-validate`,
//! pinned in .ci/run, for the oldest Kubernetes they are written for and the newest it knows),
//! parse (PyYAML, from Debian's python3-yaml, through tests/deploy/kubernetes_facts.py) and say
//! what the README promises: exec probes on `start_server --check` asking the control socket
//! that the container's start_server opens, the image's HEALTHCHECK being the same check,
//! `--reload-on-change` on the mounted ConfigMap, a grace period longer than start_server's own
//! shutdown, and the hello_worker image's ENTRYPOINT, with only options start_server has. And
//! each image is the same whether built in a Rust image (multi-stage) or from binaries built on
//! the host (`*.prebuilt.Containerfile`, the one tests/container.rs builds and runs).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{CONFIGMAP, CONTAINER, Containerfile, DEPLOYMENT, Facts, bin, split_at_dashes};

const CONTAINERFILE: &str = "deploy/container/hello_worker.Containerfile";
/// Each multi-stage Containerfile and its twin that takes binaries built on the host.
const TWINS: [(&str, &str); 2] = [
    (
        "deploy/container/Containerfile",
        "deploy/container/prebuilt.Containerfile",
    ),
    (
        "deploy/container/hello_worker.Containerfile",
        "deploy/container/hello_worker.prebuilt.Containerfile",
    ),
];
/// The oldest Kubernetes the manifests are written for: 1.25, where Pod Security Admission,
/// whose `restricted` profile the Deployment meets (non-root, no privilege escalation, no
/// capabilities, the runtime's seccomp profile), became stable. Also the oldest schema that
/// kubernetes-validate still has.
const OLDEST_KUBERNETES: &str = "1.25.0";
/// What start_server needs between its workers' last signal (or KILL) and its exit: reaping,
/// removing its files; generous, it is not a measurement.
const EXIT_MARGIN_SECS: u64 = 5;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    let containerfile = Containerfile::read(CONTAINERFILE);
    let image = containerfile.entrypoint();
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
    assert_eq!(containerfile.instruction("EXPOSE"), port);
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

/// The version of kubernetes-validate that .ci/run installs (`kubernetes-validate==X.Y.Z`).
fn kubernetes_validate_pin() -> String {
    let ci = fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    let at = ci
        .find("kubernetes-validate==")
        .expect(".ci/run installs kubernetes-validate==VERSION");
    ci[at + "kubernetes-validate==".len()..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_manifests_are_valid_for_the_oldest_and_newest_kubernetes() {
    let pin = kubernetes_validate_pin();
    let version = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate: {e}: pip install kubernetes-validate=={pin} (.ci/run does)"
            )
        });
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        pin,
        "kubernetes-validate's version: pip install kubernetes-validate=={pin} (.ci/run does)"
    );
    // kubernetes-validate X.Y.Z has the schemas of Kubernetes up to X.Y.
    let (major_minor, _) = pin.rsplit_once('.').expect("X.Y.Z");
    let newest = format!("{major_minor}.0");
    let manifests = common::kubernetes::manifests();
    for kubernetes in [OLDEST_KUBERNETES, &newest] {
        // --strict: a field the schema does not have (a misspelt one) is an error too.
        let output = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", kubernetes])
            .args(&manifests)
            .output()
            .expect("run kubernetes-validate");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "not valid for Kubernetes {kubernetes}:\n{report}"
        );
        let (major_minor, _) = kubernetes.rsplit_once('.').unwrap();
        for resource in [
            format!("deployment/{DEPLOYMENT}"),
            format!("configmap/{CONFIGMAP}"),
        ] {
            assert!(
                report.contains(&format!(
                    "passed for resource {resource} against version {major_minor}"
                )),
                "{resource} was not validated against {kubernetes}:\n{report}"
            );
        }
    }
}

#[test]
fn the_images_healthcheck_is_the_probes_check() {
    let facts = Facts::of_manifests();
    let readiness = facts.all(&format!("{CONTAINER}.readinessProbe.exec"));
    assert_eq!(
        readiness,
        facts.all(&format!("{CONTAINER}.livenessProbe.exec"))
    );
    let seconds = |field: &str| facts.one(&format!("{CONTAINER}.readinessProbe.{field}"));
    let (options, command) = Containerfile::read(CONTAINERFILE).healthcheck();
    assert_eq!(
        command, readiness,
        "HEALTHCHECK CMD and the probes' command"
    );
    assert_eq!(
        options,
        [
            (
                "interval".to_string(),
                format!("{}s", seconds("periodSeconds"))
            ),
            (
                "timeout".to_string(),
                format!("{}s", seconds("timeoutSeconds"))
            ),
            (
                "retries".to_string(),
                seconds("failureThreshold").to_string()
            ),
        ],
        "HEALTHCHECK's timing is the readiness probe's"
    );
}

#[test]
fn an_image_is_the_same_built_in_a_rust_image_or_from_the_hosts_binaries() {
    // The final stage, with each COPY reduced to its destination: the binaries come from the
    // build stage in one, from the build context in the other.
    let stage = |path| {
        let containerfile = Containerfile::read(path);
        containerfile
            .final_stage()
            .into_iter()
            .map(|line| match line.strip_prefix("COPY ") {
                Some(copy) => format!("COPY {}", copy.rsplit(' ').next().unwrap()),
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
    };
    for (multi_stage, prebuilt) in TWINS {
        let prebuilt_stage = stage(prebuilt);
        assert_eq!(
            stage(multi_stage),
            prebuilt_stage,
            "{multi_stage} vs {prebuilt}"
        );
        let containerfile = Containerfile::read(prebuilt);
        let froms = containerfile
            .text
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .collect::<Vec<_>>();
        assert_eq!(froms, ["FROM scratch"], "{prebuilt} pulls nothing");
    }
}
