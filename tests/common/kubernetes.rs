//! What deploy/kubernetes/ says: the manifests parsed by tests/deploy/kubernetes_facts.py
//! (PyYAML, from Debian's python3-yaml), as facts to check (tests/deploy.rs) and to run
//! (tests/container.rs runs the Deployment's container with podman as it says).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use super::images::split_at_dashes;

pub const MANIFESTS: &str = "deploy/kubernetes";
pub const DEPLOYMENT: &str = "hello-server-starter";
pub const CONFIGMAP: &str = "hello-server-starter-config";
/// The Deployment's container, as facts name it.
pub const CONTAINER: &str = "hello-server-starter.container.hello";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The manifests under deploy/kubernetes/, in order.
pub fn manifests() -> Vec<std::path::PathBuf> {
    let mut manifests: Vec<_> = fs::read_dir(repo().join(MANIFESTS))
        .expect("deploy/kubernetes/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    manifests
}

/// The facts the script prints, NAME → its values in order.
pub struct Facts(HashMap<String, Vec<String>>);

impl Facts {
    pub fn of_manifests() -> Facts {
        let manifests = manifests();
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

    pub fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn one(&self, name: &str) -> &str {
        match self.all(name) {
            [value] => value,
            other => panic!("expected one {name}, found {other:?}"),
        }
    }

    /// The `PATH=VALUE` leaves of a mapping fact (a security context, an emptyDir).
    pub fn leaves(&self, name: &str) -> Vec<(&str, &str)> {
        self.all(name)
            .iter()
            .map(|l| l.split_once('=').expect("PATH=VALUE"))
            .collect()
    }

    /// The container's command: start_server and its options, then `--` and the worker.
    pub fn command(&self) -> (&[String], &[String]) {
        split_at_dashes(self.all(&format!("{CONTAINER}.command")))
    }

    /// The value of `--NAME=VALUE` among start_server's options in the container's command.
    pub fn option(&self, name: &str) -> &str {
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

    pub fn seconds(&self, name: &str) -> u64 {
        let value = self.option(name);
        value
            .parse()
            .unwrap_or_else(|_| panic!("--{name}={value}: whole seconds expected"))
    }

    /// `(volume, mountPath)` of the container's mounts.
    pub fn mounts(&self) -> Vec<(&str, &str)> {
        self.all(&format!("{CONTAINER}.mount"))
            .iter()
            .map(|m| {
                let mut words = m.split(' ');
                let volume = words.next().expect("a volume");
                let path = words.next().expect("a mount path");
                assert!(words.next().is_none(), "a subPath mount: {m}");
                (volume, path)
            })
            .collect()
    }

    /// The volume mounted at `path`.
    pub fn volume_at(&self, path: &str) -> &str {
        self.mounts()
            .into_iter()
            .find(|(_, at)| *at == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path} (a subPath mount never updates)"))
            .0
    }

    /// The source of volume `name` (`emptyDir`, `configMap NAME`).
    pub fn volume_source(&self, name: &str) -> &str {
        self.all(&format!("{DEPLOYMENT}.volume"))
            .iter()
            .find_map(|v| v.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The ConfigMap's files: key → content.
    pub fn configmap_files(&self) -> Vec<(String, String)> {
        self.all(&format!("{CONFIGMAP}.data"))
            .iter()
            .map(|key| {
                let json = self.one(&format!("{CONFIGMAP}.file.{key}"));
                let content: String = serde_json::from_str(json).expect("a JSON string");
                (key.clone(), content)
            })
            .collect()
    }
}
