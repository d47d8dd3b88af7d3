"""Node Feature Discovery: with a NodeFeatureDiscovery instance, nodes carry NFD labels,
and ``feature.node.kubernetes.io/pci-10de.present=true`` only where the node's VM in the
vSphere lab has powered-on passthrough GPUs (nodes link to VMs by name).

The GPU inventory (gpu_inventory.py) is polled off the event loop by ``InventoryPoller``,
shared with the GPU Operator controller; with no vSphere lab no node gets the label.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..gpu_inventory import GpuInventory, NoGpuInventory, VmGpus
from .base import Controller, condition

log = logging.getLogger(__name__)

NVIDIA_LABEL = "feature.node.kubernetes.io/pci-10de.present"
VM_ANNOTATION = "gpu-lab.llmops.io/vm-name"
_PREFIX = "feature.node.kubernetes.io/"


class InventoryPoller:
    """Asks the GPU inventory every ``interval`` seconds in a worker thread."""

    def __init__(self, inventory: GpuInventory | None, interval: float = 2.0) -> None:
        self.inventory = inventory or NoGpuInventory()
        self.interval = interval
        self.gpus: dict[str, VmGpus] | None = None
        self.listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.polled = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gpu-inventory-poller")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, self.inventory.gpus_by_vm)
        except Exception:
            log.exception("GPU inventory failed")
            found = None
        changed = found != self.gpus
        self.gpus = found
        self.polled.set()
        if changed:
            for listener in self.listeners:
                listener()

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def vm_gpus(self, node: dict[str, Any]) -> VmGpus | None:
        vm = (node["metadata"].get("annotations") or {}).get(VM_ANNOTATION,
                                                             node["metadata"]["name"])
        return (self.gpus or {}).get(vm)


def base_labels(node: dict[str, Any], minor: str) -> dict[str, str]:
    info = (node.get("status") or {}).get("nodeInfo") or {}
    return {
        _PREFIX + "cpu-model.vendor_id": "Intel",
        _PREFIX + "cpu-cpuid.AVX2": "true",
        _PREFIX + "kernel-version.full": info.get("kernelVersion", ""),
        _PREFIX + "pci-15ad.present": "true",
        _PREFIX + "system-os_release.ID": "rhcos",
        _PREFIX + "system-os_release.VERSION_ID": minor,
    }


class NfdController(Controller):
    name = "nfd-operator"
    watches = (("nfd.openshift.io", "nodefeaturediscoveries"), ("", "nodes"))

    def __init__(self, server: Any, poller: InventoryPoller) -> None:
        super().__init__(server)
        self.poller = poller
        poller.listeners.append(self._inventory_changed)

    def _inventory_changed(self) -> None:
        self.dirty = True
        if self.server.controllers is not None:
            self.server.controllers.poke(self.name)

    def reconcile(self) -> float | None:
        instances = [i for i in self.list("nfd.openshift.io", "nodefeaturediscoveries")
                     if not i["metadata"].get("deletionTimestamp")]
        minor = ".".join(self.settings.ocp_version.split(".")[:2])
        for node in self.list("", "nodes"):
            labels = node["metadata"].get("labels") or {}
            wanted = base_labels(node, minor) if instances else {}
            gpus = self.poller.vm_gpus(node)
            if instances and gpus is not None and gpus.count > 0:
                wanted[NVIDIA_LABEL] = "true"
            patch: dict[str, Any] = {k: v for k, v in wanted.items() if labels.get(k) != v}
            patch.update({k: None for k in labels if k.startswith(_PREFIX) and k not in wanted})
            if patch:
                self.patch("", "nodes", None, node["metadata"]["name"],
                           {"metadata": {"labels": patch}})
        for instance in instances:
            previous = (instance.get("status") or {}).get("conditions") or []
            self.set_status("nfd.openshift.io", "nodefeaturediscoveries", instance, {
                "conditions": [
                    condition("Available", True, "Available", "NFD is available", previous),
                    condition("Upgradeable", True, "Upgradeable", "NFD can be upgraded",
                              previous),
                    condition("Progressing", False, "Progressing", "NFD is not progressing",
                              previous),
                    condition("Degraded", False, "Degraded", "NFD is not degraded",
                              previous)]})
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.poller.stop()
