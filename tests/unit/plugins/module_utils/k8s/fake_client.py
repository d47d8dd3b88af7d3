"""The one in-memory stand-in for K8sClient (get, list, apply, delete, logs) for runner tests.

Objects are kept by ``(kind, namespace, name)`` (namespace ``None`` for cluster-scoped
kinds). Server-side apply is modelled per field manager: an object is its server-owned
part (``base``: what the cluster itself wrote, e.g. status, through ``put``) merged with
the last manifest each manager applied, so a manager that applies fewer labels drops
exactly its own. As the API server does, a Secret's ``stringData`` is stored as base64
``data`` and never read back. Check mode (a dry run) computes the answer and stores
nothing.

What a test sees: ``writes`` (every real write: ``(verb, kind, name)``), ``calls`` (every
call, dry runs included: ``("get", kind, namespace, name)``, ``("list", kind, namespace,
label_selector)``, ``("apply", kind, check_mode)``, ``("delete", kind, check_mode)``).
The cluster's controllers are played two ways: ``controllers``, called before every read
(bind a PVC, finish a Job), and ``on_apply``, a kind -> ``fn(fake, applied_object)`` called
after a real apply of that kind (a kubelet making a RayCluster's pods, a router admitting a
Route). Kinds in ``unserved`` are not served by the cluster (an operator not installed):
every call on them raises ``NotFoundError`` as the real client does.
"""

from __future__ import annotations

import base64
import copy

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import (
    has_changed,
    make_diff,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    NotFoundError,
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


def _as_stored(obj: dict) -> dict:
    """What the API server stores: a Secret's ``stringData`` folded into base64 ``data``."""
    obj = copy.deepcopy(obj)
    if obj.get("kind") == "Secret" and "stringData" in obj:
        encoded = {key: base64.b64encode(str(value).encode()).decode()
                   for key, value in (obj.pop("stringData") or {}).items()}
        obj["data"] = {**(obj.get("data") or {}), **encoded}
    return obj


def _matches(obj: dict, selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, _sep, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


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
    def __init__(self, objects=(), on_apply=None, logs=None):
        self.objects: dict = {}  # (kind, namespace, name) -> {"base": {}, "applied": {}}
        self.writes: list = []
        self.calls: list = []
        self.controllers: list = []
        self.on_apply: dict = dict(on_apply or {})
        self.pod_logs: dict = dict(logs or {})
        self.unserved: set = set()
        for obj in objects:
            self.put(obj)

    # --- test setup -------------------------------------------------------------------
    @staticmethod
    def key(kind: str, name: str, namespace: str | None = None) -> tuple:
        return (kind, None if kind in CLUSTER_SCOPED else namespace, name)

    def put(self, obj: dict, *, replace: bool = False) -> None:
        """What the cluster holds without us (written by others or by controllers), merged
        into what it held, or ``replace``-ing it; no write is recorded."""
        meta = obj["metadata"]
        entry = self.objects.setdefault(self.key(obj["kind"], meta["name"],
                                                 meta.get("namespace")),
                                        {"base": {}, "applied": {}})
        if replace:
            entry["base"] = {}
        _merge(entry["base"], _as_stored(obj))

    def render(self, key: tuple) -> dict | None:
        entry = self.objects.get(key)
        if entry is None:
            return None
        obj = copy.deepcopy(entry["base"])
        for manifest in entry["applied"].values():
            _merge(obj, manifest)
        return obj

    def find(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        return self.render(self.key(kind, name, namespace))

    def snapshot(self) -> dict:
        return {key: self.render(key) for key in self.objects}

    def _tick(self) -> None:
        for controller in self.controllers:
            controller(self)

    # --- the K8sClient surface ----------------------------------------------------------
    def _served(self, api_version: str, kind: str) -> None:
        if kind in self.unserved:
            raise NotFoundError(f"the server has no {api_version} {kind}")

    def get(self, api_version, kind, name, namespace=None):
        self.calls.append(("get", kind, namespace, name))
        self._served(api_version, kind)
        self._tick()
        return self.find(kind, name, namespace)

    def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        self.calls.append(("list", kind, namespace, label_selector))
        self._served(api_version, kind)
        self._tick()
        out = []
        for key in sorted(self.objects, key=str):
            if key[0] != kind or (namespace and key[1] != namespace):
                continue
            obj = self.render(key)
            if _matches(obj, label_selector):
                out.append(obj)
        return out

    def apply(self, manifest, *, check_mode, force_conflicts=False, manager_suffix=""):
        self.calls.append(("apply", manifest["kind"], check_mode))
        self._served(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        key = self.key(manifest["kind"], meta["name"], meta.get("namespace"))
        manager = f"{FIELD_MANAGER}/{manager_suffix}" if manager_suffix else FIELD_MANAGER
        before = self.render(key)
        saved = copy.deepcopy(self.objects.get(key))
        entry = self.objects.setdefault(key, {"base": {}, "applied": {}})
        entry["applied"][manager] = _as_stored(manifest)
        after = self.render(key)
        if check_mode:
            if saved is None:
                del self.objects[key]
            else:
                self.objects[key] = saved
        else:
            self.writes.append(("apply", manifest["kind"], meta["name"]))
            if manifest["kind"] in self.on_apply:
                self.on_apply[manifest["kind"]](self, copy.deepcopy(after))
        changed = before is None or has_changed(before, after)
        return ApplyResult(changed=changed, before=before, after=after,
                           diff=make_diff(before or {}, after) if changed else {})

    def delete(self, api_version, kind, name, namespace=None, *, check_mode, propagation=None):
        self.calls.append(("delete", kind, check_mode))
        self._served(api_version, kind)
        key = self.key(kind, name, namespace)
        if key not in self.objects:
            return False
        if not check_mode:
            del self.objects[key]
            self.writes.append(("delete", kind, name))
        return True

    def logs(self, pod, namespace, container=None):
        return self.pod_logs.get(pod, "")
