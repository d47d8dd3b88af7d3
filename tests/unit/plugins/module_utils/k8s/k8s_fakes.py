"""A small in-memory stand-in for K8sClient: the methods the runners call, nothing more.

Objects are kept by (kind, namespace, name). ``apply`` behaves like server-side apply
for what the runners look at: the status the server (or a controller) wrote is kept,
``stringData`` becomes base64 ``data``, and a dry run (check mode) changes nothing.
Every real write is recorded in ``writes``; every call in ``calls``. ``controllers``
maps a kind to a function called after a real apply of that kind (a tiny kubelet or
router), so a test can make pods and Route status appear the way the cluster would.
"""

from __future__ import annotations

import base64
import copy

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import (
    has_changed,
    make_diff,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import ApplyResult


def _matches(obj: dict, selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _sep, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeK8s:
    def __init__(self, objects=(), controllers=None, logs=None):
        self.objects: dict = {}
        self.writes: list = []
        self.calls: list = []
        self.controllers = dict(controllers or {})
        self.pod_logs = dict(logs or {})
        for obj in objects:
            self.put(obj)

    @staticmethod
    def key(obj: dict) -> tuple:
        meta = obj["metadata"]
        return obj["kind"], meta.get("namespace"), meta["name"]

    def put(self, obj: dict) -> None:
        """Store as the server would (no write recorded: this is the cluster's own state)."""
        self.objects[self.key(obj)] = copy.deepcopy(obj)

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    # --- the K8sClient surface ------------------------------------------------------
    def get(self, api_version, kind, name, namespace=None):
        self.calls.append(("get", kind, namespace, name))
        return self.find(kind, name, namespace)

    def list(self, api_version, kind, namespace=None, label_selector=None,
             field_selector=None):
        self.calls.append(("list", kind, namespace, label_selector))
        return [copy.deepcopy(o) for (k, ns, _n), o in sorted(self.objects.items())
                if k == kind and (namespace is None or ns == namespace)
                and _matches(o, label_selector)]

    def apply(self, manifest, *, check_mode, force_conflicts=False, manager_suffix=""):
        self.calls.append(("apply", manifest["kind"], check_mode))
        before = self.find(*self._ref(manifest))
        after = copy.deepcopy(manifest)
        if "stringData" in after:
            after["data"] = {k: base64.b64encode(v.encode()).decode()
                             for k, v in after.pop("stringData").items()}
        if before and "status" in before:
            after["status"] = before["status"]
        if not check_mode:
            self.objects[self.key(after)] = copy.deepcopy(after)
            self.writes.append(("apply", *self.key(after)))
            if manifest["kind"] in self.controllers:
                self.controllers[manifest["kind"]](self, after)
        changed = before is None or has_changed(before, after)
        return ApplyResult(changed=changed, before=before, after=after,
                           diff=make_diff(before or {}, after) if changed else {})

    def delete(self, api_version, kind, name, namespace=None, *, check_mode,
               propagation=None):
        self.calls.append(("delete", kind, check_mode))
        if (kind, namespace, name) not in self.objects:
            return False
        if not check_mode:
            del self.objects[(kind, namespace, name)]
            self.writes.append(("delete", kind, namespace, name))
        return True

    def logs(self, pod, namespace, container=None):
        return self.pod_logs.get(pod, "")

    @staticmethod
    def _ref(manifest: dict) -> tuple:
        meta = manifest["metadata"]
        return manifest["kind"], meta["name"], meta.get("namespace")
