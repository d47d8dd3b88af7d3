"""Deployments -> ReplicaSets -> Pods, with the status fields clients wait on.

A Deployment owns one ReplicaSet per pod template (``pod-template-hash``); the current one
is scaled to ``spec.replicas`` and older ones to zero. Status follows the real
controllers: replicas, updated/ready/available replicas, observedGeneration and the
Available/Progressing conditions.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .base import Controller, condition, owned_by, owner_ref

_TERMINAL = ("Succeeded", "Failed")


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[int(digest[i:i + 2], 16) % len(alphabet)] for i in range(0, 20, 2))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    watches = (("apps", "replicasets"), ("", "pods"))

    def reconcile(self) -> float | None:
        pods = self.list("", "pods")
        for rs in self.list("apps", "replicasets"):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            mine = [p for p in pods if owned_by(p, rs) and not p["metadata"].get(
                "deletionTimestamp") and (p.get("status") or {}).get("phase") not in _TERMINAL]
            want = rs["spec"].get("replicas", 1)
            for _count in range(want - len(mine)):
                self._create_pod(rs)
            for extra in sorted(mine, key=lambda p: p["metadata"]["name"])[want:] if len(
                    mine) > want else []:
                self.delete("", "pods", extra["metadata"]["namespace"],
                            extra["metadata"]["name"])
            ready = sum(1 for p in mine if _ready(p))
            self.set_status("apps", "replicasets", rs, {
                "replicas": min(len(mine), max(want, len(mine))),
                "fullyLabeledReplicas": len(mine), "readyReplicas": ready,
                "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]})
        return None

    def _create_pod(self, rs: dict[str, Any]) -> None:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = template.get("metadata") or {}
        meta.pop("creationTimestamp", None)
        meta.update({"generateName": f"{rs['metadata']['name']}-",
                     "namespace": rs["metadata"]["namespace"],
                     "ownerReferences": [owner_ref(rs)]})
        self.create("", "pods", {"metadata": meta, "spec": template["spec"]})


class DeploymentController(Controller):
    name = "deployment-controller"
    watches = (("apps", "deployments"), ("apps", "replicasets"))

    def reconcile(self) -> float | None:
        sets = self.list("apps", "replicasets")
        for dep in self.list("apps", "deployments"):
            if not dep["metadata"].get("deletionTimestamp"):
                self._sync(dep, [rs for rs in sets if owned_by(rs, dep)])
        return None

    def _sync(self, dep: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        spec = dep["spec"]
        want = spec.get("replicas", 1)
        digest = template_hash(spec["template"])
        name = f"{dep['metadata']['name']}-{digest}"
        current = next((rs for rs in owned if rs["metadata"]["name"] == name), None)
        if current is None:
            template = copy.deepcopy(spec["template"])
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels["pod-template-hash"] = digest
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
            current = self.create("apps", "replicasets", {
                "metadata": {"name": name, "namespace": dep["metadata"]["namespace"],
                             "labels": labels, "ownerReferences": [owner_ref(dep)],
                             "annotations": {"deployment.kubernetes.io/desired-replicas":
                                             str(want)}},
                "spec": {"replicas": want, "selector": selector, "template": template}})
            if current is None:
                return
        elif current["spec"].get("replicas") != want:
            self.patch("apps", "replicasets", current["metadata"]["namespace"], name,
                       {"spec": {"replicas": want}})
        for old in owned:
            if old["metadata"]["name"] != name and old["spec"].get("replicas"):
                self.patch("apps", "replicasets", old["metadata"]["namespace"],
                           old["metadata"]["name"], {"spec": {"replicas": 0}})
        self._status(dep, owned, current, want)

    def _status(self, dep: dict[str, Any], owned: list[dict[str, Any]],
                current: dict[str, Any], want: int) -> None:
        total = sum((rs.get("status") or {}).get("replicas", 0) for rs in owned)
        ready = sum((rs.get("status") or {}).get("readyReplicas", 0) for rs in owned)
        updated = (current.get("status") or {}).get("replicas", 0)
        previous = (dep.get("status") or {}).get("conditions") or []
        available = ready >= want
        complete = updated == want and ready >= want and total == want
        status: dict[str, Any] = {
            "observedGeneration": dep["metadata"]["generation"], "replicas": total,
            "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [
                condition("Available", available,
                          "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                          "Deployment has minimum availability." if available else
                          "Deployment does not have minimum availability.", previous),
                condition("Progressing", True,
                          "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                          f'ReplicaSet "{current["metadata"]["name"]}" '
                          + ("has successfully progressed." if complete else "is progressing."),
                          previous),
            ],
        }
        for c in status["conditions"]:
            c["lastUpdateTime"] = c["lastTransitionTime"]
        if total - ready > 0:
            status["unavailableReplicas"] = total - ready
        for key in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
            if not status[key]:
                del status[key]
        self.set_status("apps", "deployments", dep, status)
