"""Nodes follow their VMs' power, as a real node's kubelet and node controller make them.

A node is linked to a VM of the vSphere lab by name (the ``gpu-lab.llmops.io/vm-name``
annotation, else the node's name). While the VM is powered off, the kubelet posts no
status: the node controller sets every condition to ``Unknown`` with reason
``NodeStatusUnknown`` ("Kubelet stopped posting node status."); the pods bound to the
node stay listed. When the VM is powered on again the kubelet of the new boot reports the
node ``Ready`` (``KubeletReady``) with a new ``status.nodeInfo.bootID``. A node whose VM
the watch does not know (no vSphere lab, or a VM of another name) is left alone.

The power comes from ``VmPowerWatch`` (vm_power.py), which counts power-ons, so a power
cycle shorter than a controller pass still gives the node a new boot ID.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..apiserver import clock
from ..vm_power import VmPower, VmPowerWatch
from .base import Controller

VM_ANNOTATION = "gpu-lab.llmops.io/vm-name"
UNKNOWN_REASON = "NodeStatusUnknown"
_UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
_READY = ("KubeletReady", "kubelet is posting ready status")
_HEALTHY = {"MemoryPressure": ("KubeletHasSufficientMemory",
                               "kubelet has sufficient memory available"),
            "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available")}


def vm_of(node: dict[str, Any]) -> str:
    meta = node["metadata"]
    return (meta.get("annotations") or {}).get(VM_ANNOTATION, meta["name"])


def _conditions(node: dict[str, Any], up: bool) -> list[dict[str, Any]]:
    now = clock.now()
    out = []
    for cond in (node.get("status") or {}).get("conditions") or []:
        cond = dict(cond)
        if up:
            status = "True" if cond["type"] == "Ready" else "False"
            reason, message = _READY if cond["type"] == "Ready" else _HEALTHY.get(
                cond["type"], (cond.get("reason", ""), cond.get("message", "")))
        else:
            status, reason, message = "Unknown", UNKNOWN_REASON, _UNKNOWN_MESSAGE
        if cond.get("status") != status:
            cond["lastTransitionTime"] = now
        cond.update(status=status, reason=reason, message=message, lastHeartbeatTime=now)
        out.append(cond)
    return out


def _is_down(node: dict[str, Any]) -> bool:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Ready"), {})
    return ready.get("reason") == UNKNOWN_REASON


class NodePowerController(Controller):
    name = "node-power"
    watches = (("", "nodes"),)

    def __init__(self, server: Any, watch: VmPowerWatch) -> None:
        super().__init__(server)
        self.watch = watch
        self._boots: dict[str, int] = {}  # VM -> power-on count already given a new boot

    def close(self) -> None:
        self.watch.stop()

    def reconcile(self) -> float | None:
        power = self.watch.power()
        refused = [node for node in self.list("", "nodes")
                   if vm_of(node) in power and not self._sync(node, vm_of(node),
                                                              power[vm_of(node)])]
        return 1.0 if refused else None  # a refused write (logged) is tried again

    def _sync(self, node: dict[str, Any], vm: str, power: VmPower) -> bool:
        seen = self._boots.setdefault(vm, power.boots)
        if power.boots < seen:  # the watch reconnected and counts from zero again
            self._boots[vm] = seen = power.boots
        status = dict(node.get("status") or {})
        if not power.on:
            if _is_down(node):
                return True
            status["conditions"] = _conditions(node, up=False)
        elif power.boots > seen:
            status["conditions"] = _conditions(node, up=True)
            status["nodeInfo"] = {**(status.get("nodeInfo") or {}), "bootID": str(uuid.uuid4())}
        elif _is_down(node):  # on again, its power-on already counted (lab restarted)
            status["conditions"] = _conditions(node, up=True)
        else:
            return True
        if self.set_status("", "nodes", node, status) is None:
            return False
        self._boots[vm] = power.boots
        return True
