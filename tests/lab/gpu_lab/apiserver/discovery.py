"""Discovery documents: ``/version``, ``/api``, ``/apis`` and per group/version lists."""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import Registry, ResourceType

_SUBRESOURCES: dict[str, dict[str, Any]] = {
    "status": {"verbs": ["get", "patch", "update"]},
    "scale": {"kind": "Scale", "group": "autoscaling", "version": "v1",
              "verbs": ["get", "patch", "update"]},
    "log": {"verbs": ["get"]},
    "exec": {"kind": "PodExecOptions", "verbs": ["create", "get"]},
    "binding": {"kind": "Binding", "verbs": ["create"]},
    "eviction": {"kind": "Eviction", "group": "policy", "version": "v1", "verbs": ["create"]},
    "finalize": {"verbs": ["update"]},
}


def version_info(kube_version: str) -> dict[str, str]:
    major, minor = kube_version.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": kube_version,
        "gitCommit": hashlib.sha1(kube_version.encode()).hexdigest(),
        "gitTreeState": "clean",
        "buildDate": "2025-05-01T00:00:00Z",
        "goVersion": "go1.22.12 (Red Hat 1.22.12-2.el9_5) X:strictfipsruntime",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                        "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.groups() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    for g, versions in registry.groups():
        if g == name and g:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, versions)}
    return None


def _entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": sorted(rt.verbs),
        "storageVersionHash": hashlib.sha256(
            f"{rt.group}/{rt.storage_version}/{rt.kind}".encode()).hexdigest()[:11],
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def resource_list(registry: Registry, group_name: str, version: str) -> dict[str, Any] | None:
    types = registry.resources(group_name, version)
    if not types:
        return None
    resources = []
    for rt in sorted(types, key=lambda t: t.plural):
        resources.append(_entry(rt))
        for sub in rt.subresources:
            info = _SUBRESOURCES.get(sub, {"verbs": ["get"]})
            item = {"name": f"{rt.plural}/{sub}", "singularName": "",
                    "namespaced": rt.namespaced, "kind": info.get("kind", rt.kind),
                    "verbs": info["verbs"]}
            if "group" in info:
                item["group"], item["version"] = info["group"], info["version"]
            resources.append(item)
    group_version = f"{group_name}/{version}" if group_name else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}
