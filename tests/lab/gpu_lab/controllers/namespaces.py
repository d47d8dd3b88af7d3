"""Namespace lifecycle and garbage collection.

- Every active namespace gets the service accounts OpenShift creates (``default``,
  ``builder``, ``deployer``) and the SCC range annotations restricted-v2 reads.
- A terminating namespace has its content deleted, then its ``kubernetes`` finalizer
  removed through the ``finalize`` subresource, which lets the server delete it.
- Objects whose owners (ownerReferences) are all gone are deleted (background policy).
"""

from __future__ import annotations

import zlib
from typing import Any

from ..apiserver.errors import ApiError
from ..apiserver.store import Event
from .base import Controller

_SERVICE_ACCOUNTS = ("default", "builder", "deployer")


class NamespaceController(Controller):
    name = "namespace-controller"
    watches = (("", "namespaces"), ("", "serviceaccounts"))

    def wants(self, event: Event) -> bool:
        if event.key in self.watches:
            return True
        # content of a terminating namespace going away
        return event.type == "DELETED" and bool(event.namespace)

    def reconcile(self) -> float | None:
        again = None
        for ns in self.list("", "namespaces"):
            name = ns["metadata"]["name"]
            if ns["metadata"].get("deletionTimestamp"):
                if not self._empty(name):
                    again = 0.2
                continue
            self._annotate(ns)
            for sa in _SERVICE_ACCOUNTS:
                if self.get("", "serviceaccounts", name, sa) is None:
                    self.create("", "serviceaccounts",
                                {"metadata": {"name": sa, "namespace": name}})
        return again

    def _annotate(self, ns: dict[str, Any]) -> None:
        name = ns["metadata"]["name"]
        annotations = ns["metadata"].get("annotations") or {}
        if "openshift.io/sa.scc.uid-range" in annotations:
            return
        block = 1000000000 + (zlib.crc32(name.encode()) % 10000) * 10000
        self.patch("", "namespaces", None, name, {"metadata": {"annotations": {
            "openshift.io/sa.scc.uid-range": f"{block}/10000",
            "openshift.io/sa.scc.supplemental-groups": f"{block}/10000",
            "openshift.io/sa.scc.mcs": "s0:c27,c9"}}})

    def _empty(self, namespace: str) -> bool:
        """Delete what is left in a terminating namespace; True once it is empty."""
        remaining = 0
        for key in self.api.store.resource_keys():
            rt = self.api.registry.storage(*key)
            if rt is None or not rt.namespaced:
                continue
            for obj in self.api.store.list(key, namespace):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self.delete(key[0], key[1], namespace, obj["metadata"]["name"], grace=0)
                elif key == ("", "pods"):
                    self.delete("", "pods", namespace, obj["metadata"]["name"], grace=0)
        if remaining:
            return False
        ns = self.get("", "namespaces", None, namespace)
        if ns is not None and "kubernetes" in (ns.get("spec") or {}).get("finalizers", []):
            ns["spec"]["finalizers"] = [f for f in ns["spec"]["finalizers"] if f != "kubernetes"]
            try:
                self.api.update(self.api.rt("", "namespaces"), None, namespace, ns, self.ctx,
                                "finalize")
            except ApiError:
                return False
        return True


class GarbageCollector(Controller):
    name = "garbage-collector"

    def wants(self, event: Event) -> bool:
        return event.type == "DELETED"

    def reconcile(self) -> float | None:
        store = self.api.store
        objects = [(key, o) for key in store.resource_keys() for o in store.list(key)]
        uids = {o["metadata"]["uid"] for _key, o in objects}
        for key, obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            orphaned = refs and not any(r.get("uid") in uids for r in refs)
            if orphaned and not obj["metadata"].get("deletionTimestamp"):
                self.delete(key[0], key[1], obj["metadata"].get("namespace"),
                            obj["metadata"]["name"], grace=0)
        return None
