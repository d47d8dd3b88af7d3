"""The scheduler: binds pending pods to nodes that fit, or says why none does.

Filters as kube-scheduler's default plugins do, reduced to what the lab needs: node
readiness and ``unschedulable``, taints vs tolerations, nodeSelector and required node
affinity, resource requests (cpu, memory, ``nvidia.com/gpu``, any extended resource)
against allocatable minus what bound pods request, and claims (missing, or unbound with
Immediate binding). An unschedulable pod gets ``PodScheduled=False`` with the real
message shape (``0/11 nodes are available: 3 node(s) had untolerated taint ...``) and a
FailedScheduling event.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from ..apiserver.selectors import match_expressions
from .base import Controller, condition
from .storage import SELECTED_NODE

_TERMINAL = ("Succeeded", "Failed")


def pod_requests(pod: dict[str, Any]) -> dict[str, Decimal]:
    """Effective requests: sum over containers, max with each init container."""
    total: Counter[str] = Counter()
    for c in pod["spec"].get("containers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] += parse_quantity(v)
    for c in pod["spec"].get("initContainers") or []:
        for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
            total[k] = max(total[k], parse_quantity(v))
    return dict(total)


def _tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _affinity_matches(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    spec = pod["spec"]
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(
        match_expressions({"matchExpressions": t.get("matchExpressions")}, labels) for t in terms)


class Scheduler(Controller):
    name = "default-scheduler"
    watches = (("", "pods"), ("", "nodes"), ("", "persistentvolumeclaims"))

    def reconcile(self) -> float | None:
        pods = self.list("", "pods")
        nodes = [n for n in self.list("", "nodes") if not n["metadata"].get("deletionTimestamp")]
        used: dict[str, Counter[str]] = {n["metadata"]["name"]: Counter() for n in nodes}
        counts: Counter[str] = Counter()
        for pod in pods:
            node = pod["spec"].get("nodeName")
            if node in used and (pod.get("status") or {}).get("phase") not in _TERMINAL:
                used[node].update(pod_requests(pod))
                counts[node] += 1
        for pod in pods:
            if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
                continue
            if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            self._schedule(pod, nodes, used, counts)
        return None

    def _schedule(self, pod: dict[str, Any], nodes: list[dict[str, Any]],
                  used: dict[str, Counter[str]], counts: Counter[str]) -> None:
        claim_problem, claims = self._claims(pod)
        if claim_problem:
            self._unschedulable(pod, f"0/{len(nodes)} nodes are available: {claim_problem}. "
                                f"preemption: 0/{len(nodes)} nodes are available: {len(nodes)} "
                                "Preemption is not helpful for scheduling.")
            return
        wanted = pod_requests(pod)
        reasons: Counter[str] = Counter()
        feasible = []
        for node in nodes:
            why = self._node_problems(pod, node, wanted, used[node["metadata"]["name"]])
            if why:
                reasons.update(why)
            else:
                feasible.append(node)
        if not feasible:
            histogram = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            self._unschedulable(pod, f"0/{len(nodes)} nodes are available: {histogram}. "
                                f"preemption: 0/{len(nodes)} nodes are available: {len(nodes)} "
                                "No preemption victims found for incoming pod.")
            return
        best = min(feasible, key=lambda n: (counts[n["metadata"]["name"]], n["metadata"]["name"]))
        name = best["metadata"]["name"]
        for claim in claims:
            self.patch("", "persistentvolumeclaims", claim["metadata"]["namespace"],
                       claim["metadata"]["name"],
                       {"metadata": {"annotations": {SELECTED_NODE: name}}})
        self.api.bind_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], name, self.ctx)
        used[name].update(wanted)
        counts[name] += 1
        self.event(pod, "Scheduled", f"Successfully assigned {pod['metadata']['namespace']}/"
                   f"{pod['metadata']['name']} to {name}")

    def _claims(self, pod: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """(problem, unbound WaitForFirstConsumer claims to mark with the chosen node)."""
        pending = []
        for volume in pod["spec"].get("volumes") or []:
            ref = volume.get("persistentVolumeClaim")
            if not ref:
                continue
            claim = self.get("", "persistentvolumeclaims", pod["metadata"]["namespace"],
                             ref["claimName"])
            if claim is None:
                return f'persistentvolumeclaim "{ref["claimName"]}" not found', []
            if claim["spec"].get("volumeName"):
                continue
            sc = self.get("storage.k8s.io", "storageclasses", None,
                          claim["spec"].get("storageClassName") or "")
            if sc is None or sc.get("volumeBindingMode") != "WaitForFirstConsumer":
                return "pod has unbound immediate PersistentVolumeClaims", []
            pending.append(claim)
        return "", pending

    @staticmethod
    def _node_problems(pod: dict[str, Any], node: dict[str, Any], wanted: dict[str, Decimal],
                       used: Counter[str]) -> list[str]:
        status = node.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        if not ready:
            return ["node(s) were not ready"]
        if (node.get("spec") or {}).get("unschedulable"):
            return ["node(s) were unschedulable"]
        tolerations = pod["spec"].get("tolerations") or []
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(
                    taint, tolerations):
                value = taint.get("value", "")
                return [f"node(s) had untolerated taint {{{taint['key']}: {value}}}"]
        if not _affinity_matches(pod, node["metadata"].get("labels") or {}):
            return ["node(s) didn't match Pod's node affinity/selector"]
        allocatable = status.get("allocatable") or {}
        short = []
        for resource, amount in sorted(wanted.items()):
            if amount <= 0:
                continue
            free = parse_quantity(allocatable.get(resource, "0")) - used.get(resource, 0)
            if amount > free:
                short.append(f"Insufficient {resource}")
        return short

    def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        status = pod.get("status") or {}
        previous = status.get("conditions") or []
        cond = condition("PodScheduled", False, "Unschedulable", message, previous)
        new_status = dict(status, phase="Pending",
                          conditions=[c for c in previous if c.get("type") != "PodScheduled"]
                          + [cond])
        self.set_status("", "pods", pod, new_status)
        self.event(pod, "FailedScheduling", message, "Warning")
