#!/usr/bin/env python3
"""Parses the Kubernetes manifests given as arguments (PyYAML: Debian's python3-yaml) and prints
what tests/deploy.rs checks, one fact a line: NAME<TAB>VALUE. A list gives one line per item, in
order. Invalid YAML, or a manifest without the expected shape, exits non-zero with the reason."""

import sys

import yaml


def fact(name, value):
    print(f"{name}\t{value}")


def container_facts(prefix, container):
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
    for mount in container.get("volumeMounts", []):
        subpath = mount.get("subPath", "")
        fact(f"{prefix}.mount", f"{mount['name']} {mount['mountPath']} {subpath}".rstrip())
    if "lifecycle" in container:
        fact(f"{prefix}.lifecycle", ",".join(container["lifecycle"]))


def deployment_facts(name, spec):
    pod = spec["template"]["spec"]
    fact(f"{name}.terminationGracePeriodSeconds", pod["terminationGracePeriodSeconds"])
    for volume in pod.get("volumes", []):
        source = next(k for k in volume if k != "name")
        ref = volume[source].get("name", "") if isinstance(volume[source], dict) else ""
        fact(f"{name}.volume", f"{volume['name']} {source} {ref}".rstrip())
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
                    for key in document.get("data", {}):
                        fact(f"{name}.data", key)


if __name__ == "__main__":
    main(sys.argv[1:])
