"""An in-memory stand-in for K8sClient (get, list, apply, delete, logs) for runner tests.

Server-side apply is modelled per field manager: an object is its server-owned part
(``base``: what the cluster itself wrote, e.g. status) merged with the last manifest
each manager applied, so a manager that applies fewer labels drops exactly its own.
Check mode (a dry run) computes the answer and stores nothing. ``controllers`` are
called before every read and play the cluster's controllers (bind a PVC, finish a Job).
"""

from __future__ import annotations

import copy

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import (
    has_changed,
    make_diff,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    FIELD_MANAGER,
    ApplyResult,
)

CLUSTER_SCOPED = {"Node", "Namespace", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition"}


def _merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def options(self) -> dict:
        return {"clock": self, "sleep": self.sleep, "interval": 1.0}


class FakeClient:
    def __init__(self):
        self.objects: dict = {}  # (kind, namespace, name) -> {"base": {}, "applied": {}}
        self.writes: list = []  # (verb, kind, name) of every real (not dry-run) write
        self.controllers: list = []
        self.pod_logs: dict = {}

    # --- test setup -------------------------------------------------------------------
    @staticmethod
    def key(kind: str, name: str, namespace: str | None = None) -> tuple:
        return (kind, None if kind in CLUSTER_SCOPED else namespace, name)

    def put(self, obj: dict) -> None:
        """What the cluster holds without us (written by others or by controllers)."""
        meta = obj["metadata"]
        entry = self.objects.setdefault(self.key(obj["kind"], meta["name"],
                                                 meta.get("namespace")),
                                        {"base": {}, "applied": {}})
        _merge(entry["base"], obj)

    def render(self, key: tuple) -> dict | None:
        entry = self.objects.get(key)
        if entry is None:
            return None
        obj = copy.deepcopy(entry["base"])
        for manifest in entry["applied"].values():
            _merge(obj, manifest)
        return obj

    def snapshot(self) -> dict:
        return {key: self.render(key) for key in self.objects}

    def _tick(self) -> None:
        for controller in self.controllers:
            controller(self)

    # --- the K8sClient surface ----------------------------------------------------------
    def get(self, api_version, kind, name, namespace=None):
        self._tick()
        return self.render(self.key(kind, name, namespace))

    def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        self._tick()
        out = []
        for key in sorted(self.objects, key=str):
            if key[0] != kind or (namespace and key[1] != namespace):
                continue
            obj = self.render(key)
            labels = obj.get("metadata", {}).get("labels") or {}
            if label_selector and any(labels.get(k) != v for k, v in (
                    term.split("=", 1) for term in label_selector.split(","))):
                continue
            out.append(obj)
        return out

    def apply(self, manifest, *, check_mode, force_conflicts=False, manager_suffix=""):
        meta = manifest["metadata"]
        key = self.key(manifest["kind"], meta["name"], meta.get("namespace"))
        manager = f"{FIELD_MANAGER}/{manager_suffix}" if manager_suffix else FIELD_MANAGER
        before = self.render(key)
        saved = copy.deepcopy(self.objects.get(key))
        entry = self.objects.setdefault(key, {"base": {}, "applied": {}})
        entry["applied"][manager] = copy.deepcopy(manifest)
        after = self.render(key)
        if check_mode:
            if saved is None:
                del self.objects[key]
            else:
                self.objects[key] = saved
        else:
            self.writes.append(("apply", manifest["kind"], meta["name"]))
        changed = before is None or has_changed(before, after)
        return ApplyResult(changed=changed, before=before, after=after,
                           diff=make_diff(before or {}, after) if changed else {})

    def delete(self, api_version, kind, name, namespace=None, *, check_mode, propagation=None):
        key = self.key(kind, name, namespace)
        if key not in self.objects:
            return False
        if not check_mode:
            del self.objects[key]
            self.writes.append(("delete", kind, name))
        return True

    def logs(self, pod, namespace, container=None):
        return self.pod_logs.get(pod, "")
