"""CustomResourceDefinitions: validation, serving, and the library of upstream CRD files.

The upstream CRDs live beside the project (``../shared/crds/`` from the repository,
override with ``GPU_LAB_CRDS``). Parsing the multi-megabyte KubeRay YAML takes seconds,
so parsed files are cached as JSON under the lab's home, keyed by size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from . import clock
from .errors import FieldError
from .resources import ResourceType
from .schema import Schema

log = logging.getLogger(__name__)

# Directory preference when two directories ship the same CRD (OpenShift's copies win).
_PREFERENCE = ("openshift", "olm", "gpu-operator", "nfd-openshift", "kuberay", "nfd-upstream")


def crd_errors(crd: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    errors = []
    if not spec.get("group"):
        errors.append(FieldError("Required", "spec.group"))
    for key in ("plural", "kind"):
        if not names.get(key):
            errors.append(FieldError("Required", f"spec.names.{key}"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(FieldError("NotSupported", "spec.scope", spec.get("scope"),
                                 supported=["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions or sum(1 for v in versions if v.get("storage")) != 1:
        errors.append(FieldError("Invalid", "spec.versions", versions,
                                 "must have exactly one version marked as storage version"))
    expected = f"{names.get('plural')}.{spec.get('group')}"
    name = crd.get("metadata", {}).get("name")
    if names.get("plural") and spec.get("group") and name != expected:
        errors.append(FieldError("Invalid", "metadata.name", name,
                                 'must be spec.names.plural+"."+spec.group'))
    if old and (old.get("spec") or {}).get("scope") != spec.get("scope"):
        errors.append(FieldError("Invalid", "spec.scope", spec.get("scope"), "field is immutable"))
    return errors


def types_for_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One resource type per served version of a CRD."""
    spec = crd["spec"]
    names = spec["names"]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    out = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        raw = (version.get("schema") or {}).get("openAPIV3Schema")
        subresources = tuple(k for k in (version.get("subresources") or {}) if k in
                             ("status", "scale"))
        out.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope") == "Namespaced",
                schema_loader=(lambda raw=raw: Schema(raw) if raw else Schema.any()),
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources,
                builtin=False,
                storage_version=storage,
            )
        )
    return out


def established_status(crd: dict[str, Any]) -> dict[str, Any]:
    spec = crd["spec"]
    now = clock.now()
    names = dict(spec["names"])
    return {
        "acceptedNames": names,
        "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    }


class CrdLibrary:
    """The upstream CRD files, by CRD name (``rayclusters.ray.io``)."""

    def __init__(self, directory: Path | None, cache_dir: Path | None) -> None:
        self.directory = directory
        self.cache_dir = cache_dir
        self._crds: dict[str, dict[str, Any]] | None = None

    @property
    def available(self) -> bool:
        return self.directory is not None and self.directory.is_dir()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._crds is not None:
            return self._crds
        self._crds = {}
        if not self.available:
            log.warning("upstream CRD directory %s not found: custom resources get permissive "
                        "schemas (set GPU_LAB_CRDS)", self.directory)
            return self._crds
        assert self.directory is not None
        files = sorted(self.directory.glob("*/*.yaml"),
                       key=lambda p: (_rank(p.parent.name), p.name))
        for path in files:
            for doc in self._parse(path):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    self._crds.setdefault(doc["metadata"]["name"], doc)
        return self._crds

    def _parse(self, path: Path) -> list[Any]:
        stat = path.stat()
        cache = None
        if self.cache_dir is not None:
            tag = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
            cache = self.cache_dir / f"{path.stem}-{tag[:16]}.json"
            if cache.exists():
                with cache.open() as fh:
                    return json.load(fh)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open() as fh:
            docs = list(yaml.load_all(fh, Loader=loader))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with cache.open("w") as fh:
                json.dump(docs, fh, default=str)
        return docs

    def get(self, name: str) -> dict[str, Any] | None:
        crd = self._load().get(name)
        return json.loads(json.dumps(crd)) if crd else None

    def names(self) -> list[str]:
        return sorted(self._load())

    def warm(self) -> None:
        self._load()


def _rank(directory: str) -> int:
    return _PREFERENCE.index(directory) if directory in _PREFERENCE else len(_PREFERENCE)


def permissive_crd(name: str, kind: str, scope: str = "Namespaced",
                   version: str = "v1") -> dict[str, Any]:
    """A stand-in CRD accepting anything, used when the upstream files are missing."""
    plural, _sep, group = name.partition(".")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": kind, "singular": kind.lower(),
                      "listKind": f"{kind}List"},
            "scope": scope,
            "versions": [{"name": version, "served": True, "storage": True,
                          "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {
                              "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }
