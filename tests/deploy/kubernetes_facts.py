#!/usr/bin/env python3
"""Parses the Kubernetes manifests given as arguments (PyYAML: Debian's python3-yaml) and prints
what tests/deploy.rs and tests/container.rs check and run, one fact a line: NAME<TAB>VALUE. A
list gives one line per item, in order; a mapping (a security context, an emptyDir) one
`PATH=VALUE` line per leaf. Invalid YAML, or a manifest without the expected shape, exits
non-zero with the reason."""

import json
import sys

import yaml


def fact(name, value):
    print(f"{name}\t{value}")


def scalar(value):
    """Strings as they are, the rest as JSON (true, false, numbers)."""
    return value if isinstance(value, str) else json.dumps(value)


def leaves(name, mapping, path=""):
    """One `PATH=VALUE` fact per leaf of mapping; a list's items each have their own line."""
    for key, value in mapping.items():
        here = f"{path}{key}"
        if isinstance(value, dict):
            leaves(name, value, here + ".")
        elif isinstance(value, list):
            for item in value:
                fact(name, f"{here}={scalar(item)}")
        else:
            fact(name, f"{here}={scalar(value)}")


def container_facts(prefix, container):
    for key in container:
        fact(f"{prefix}.key", key)
    for word in container.get("command", []):
        fact(f"{prefix}.command", word)
    for word in container.get("args", []):
        fact(f"{prefix}.args", word)
    fact(f"{prefix}.image", container["image"])
    for port in container.get("ports", []):
        fact(f"{prefix}.port", port["containerPort"])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe not in container:
            continue
        spec = container[probe]
        kinds = [k for k in ("exec", "tcpSocket", "httpGet", "grpc") if k in spec]
        fact(f"{prefix}.{probe}.handler", ",".join(kinds))
        for word in spec.get("exec", {}).get("command", []):
            fact(f"{prefix}.{probe}.exec", word)
        for field in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
            if field in spec:
                fact(f"{prefix}.{probe}.{field}", spec[field])
    for mount in container.get("volumeMounts", []):
        subpath = mount.get("subPath", "")
        fact(f"{prefix}.mount", f"{mount['name']} {mount['mountPath']} {subpath}".rstrip())
        if mount.get("readOnly"):
            fact(f"{prefix}.readOnlyMount", mount["name"])
    leaves(f"{prefix}.securityContext", container.get("securityContext", {}))
    if "lifecycle" in container:
        fact(f"{prefix}.lifecycle", ",".join(container["lifecycle"]))


def deployment_facts(name, spec):
    pod = spec["template"]["spec"]
    for key in pod:
        fact(f"{name}.podKey", key)
    fact(f"{name}.terminationGracePeriodSeconds", pod["terminationGracePeriodSeconds"])
    leaves(f"{name}.securityContext", pod.get("securityContext", {}))
    for volume in pod.get("volumes", []):
        source = next(k for k in volume if k != "name")
        ref = volume[source].get("name", "") if isinstance(volume[source], dict) else ""
        fact(f"{name}.volume", f"{volume['name']} {source} {ref}".rstrip())
        if source == "emptyDir":
            leaves(f"{name}.emptyDir.{volume['name']}", volume[source] or {})
    for container in pod["containers"]:
        container_facts(f"{name}.container.{container['name']}", container)


def main(paths):
    for path in paths:
        with open(path, encoding="utf-8") as file:
            for document in yaml.safe_load_all(file):
                if document is None:
                    continue
                kind, name = document["kind"], document["metadata"]["name"]
                fact("object", f"{document['apiVersion']} {kind} {name}")
                if kind == "Deployment":
                    deployment_facts(name, document["spec"])
                elif kind == "ConfigMap":
                    for key, value in document.get("data", {}).items():
                        fact(f"{name}.data", key)
                        # JSON: the value may hold tabs and newlines.
                        fact(f"{name}.file.{key}", json.dumps(value))


if __name__ == "__main__":
    main(sys.argv[1:])
