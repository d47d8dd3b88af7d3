"""The NVIDIA GPU Operator: a ClusterPolicy turns NFD-labelled nodes into GPU nodes.

Each node with ``feature.node.kubernetes.io/pci-10de.present=true`` gets, after a short
simulated driver install (1 s, scaled), ``nvidia.com/gpu`` capacity and allocatable equal
to its VM's passthrough GPU count and the labels GPU Feature Discovery sets
(``nvidia.com/gpu.present``, ``.count``, ``.product``, ``.memory``, ``cuda.driver.*``...).
Nodes losing their GPUs lose both. The policy's ``status.state`` becomes ``ready`` once
every GPU node is done. Without a ClusterPolicy nothing is advertised.
"""

from __future__ import annotations

import time
from typing import Any

from .base import Controller, condition
from .nfd import NVIDIA_LABEL, InventoryPoller

GPU = "nvidia.com/gpu"
_DRIVER_SECONDS = 1.0
_LABELS = ("nvidia.com/gpu.present", "nvidia.com/gpu.count", "nvidia.com/gpu.product",
           "nvidia.com/gpu.memory", "nvidia.com/gpu.family", "nvidia.com/gpu.machine",
           "nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor",
           "nvidia.com/cuda.runtime.major", "nvidia.com/cuda.runtime.minor",
           "nvidia.com/gpu.deploy.driver", "nvidia.com/gpu.deploy.device-plugin",
           "nvidia.com/gpu.deploy.gpu-feature-discovery", "nvidia.com/gpu.deploy.dcgm-exporter",
           "nvidia.com/gpu.deploy.container-toolkit", "nvidia.com/gpu.deploy.operator-validator",
           "nvidia.com/mig.capable")


def _family(product: str) -> str:
    for key, family in (("H100", "hopper"), ("H200", "hopper"), ("A100", "ampere"),
                        ("A30", "ampere"), ("A10", "ampere"), ("L40", "ada-lovelace"),
                        ("L4", "ada-lovelace"), ("T4", "turing"), ("V100", "volta")):
        if key in product:
            return family
    return "unknown"


class GpuOperatorController(Controller):
    name = "gpu-operator"
    watches = (("nvidia.com", "clusterpolicies"), ("", "nodes"))

    def __init__(self, server: Any, poller: InventoryPoller) -> None:
        super().__init__(server)
        self.poller = poller
        self._labelled_since: dict[str, float] = {}
        poller.listeners.append(self._inventory_changed)

    def _inventory_changed(self) -> None:
        self.dirty = True
        if self.server.controllers is not None:
            self.server.controllers.poke(self.name)

    def reconcile(self) -> float | None:
        policies = [p for p in self.list("nvidia.com", "clusterpolicies")
                    if not p["metadata"].get("deletionTimestamp")]
        waits: list[float] = []
        pending = 0
        now = time.monotonic()
        for node in self.list("", "nodes"):
            name = node["metadata"]["name"]
            labels = node["metadata"].get("labels") or {}
            if not policies:  # no operator running: nothing touches the node's labels
                self._labelled_since.pop(name, None)
                continue
            gpus = self.poller.vm_gpus(node)
            eligible = bool(policies) and labels.get(NVIDIA_LABEL) == "true" and bool(
                gpus and gpus.count)
            if not eligible:
                self._labelled_since.pop(name, None)
                self._advertise(node, None)
                continue
            since = self._labelled_since.setdefault(name, now)
            left = self.scaled(_DRIVER_SECONDS) - (now - since)
            if left > 0:
                waits.append(left)
                pending += 1
                continue
            self._advertise(node, gpus)
        for i, policy in enumerate(policies):
            self._policy_status(policy, pending, ignored=i > 0)
        return min(waits) if waits else None

    def _advertise(self, node: dict[str, Any], gpus: Any) -> None:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        if gpus is None:
            wanted: dict[str, str] = {}
        else:
            wanted = {
                "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(gpus.count),
                "nvidia.com/gpu.product": gpus.product,
                "nvidia.com/gpu.memory": str(gpus.memory_mib),
                "nvidia.com/gpu.family": _family(gpus.product),
                "nvidia.com/gpu.machine": "VMware-Virtual-Platform",
                "nvidia.com/cuda.driver.major": "570", "nvidia.com/cuda.driver.minor": "148",
                "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "8",
                "nvidia.com/mig.capable": "true" if "A100" in gpus.product or "H100" in (
                    gpus.product) else "false",
            }
            for deploy in _LABELS:
                if deploy.startswith("nvidia.com/gpu.deploy."):
                    wanted[deploy] = "true"
        patch: dict[str, Any] = {k: v for k, v in wanted.items() if labels.get(k) != v}
        patch.update({k: None for k in _LABELS if k in labels and k not in wanted})
        if patch:
            self.patch("", "nodes", None, name, {"metadata": {"labels": patch}})
        status = node.get("status") or {}
        capacity, allocatable = dict(status.get("capacity") or {}), dict(
            status.get("allocatable") or {})
        if gpus is None:
            capacity.pop(GPU, None)
            allocatable.pop(GPU, None)
        else:
            capacity[GPU] = allocatable[GPU] = str(gpus.count)
        if capacity != status.get("capacity") or allocatable != status.get("allocatable"):
            current = self.get("", "nodes", None, name)
            if current is not None:
                self.set_status("", "nodes", current, dict(
                    current.get("status") or {}, capacity=capacity, allocatable=allocatable))

    def _policy_status(self, policy: dict[str, Any], pending: int, ignored: bool) -> None:
        previous = (policy.get("status") or {}).get("conditions") or []
        if ignored:
            status = {"state": "ignored", "namespace": self._namespace()}
        else:
            ready = pending == 0
            status = {"state": "ready" if ready else "notReady", "namespace": self._namespace(),
                      "conditions": [
                          condition("Ready", ready, "Reconciled" if ready else "OperandNotReady",
                                    "ClusterPolicy is ready as all resources have been "
                                    "successfully reconciled" if ready else
                                    f"ClusterPolicy is not ready: driver installing on "
                                    f"{pending} node(s)", previous),
                          condition("Error", False, "Ready" if ready else "OperandNotReady",
                                    "no errors" if ready else "operands are not ready yet",
                                    previous)]}
        self.set_status("nvidia.com", "clusterpolicies", policy, status)

    def _namespace(self) -> str:
        for dep in self.list("apps", "deployments"):
            if dep["metadata"]["name"] == "gpu-operator":
                return dep["metadata"]["namespace"]
        return "nvidia-gpu-operator"
