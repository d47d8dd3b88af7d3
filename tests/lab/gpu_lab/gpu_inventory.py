"""Which worker VMs really have GPUs: the link from the lab's OpenShift to its vSphere.

NFD and the GPU Operator controller ask a ``GpuInventory`` for the passthrough GPUs of
each powered-on VM; nodes are linked to VMs by name. ``VsphereGpuInventory`` reads the
vSphere lab's connection file (``$GPU_LAB_HOME/vsphere.json``) and counts
``VirtualPCIPassthrough`` devices with pyvmomi; ``StaticGpuInventory`` is the fake for
tests; ``NoGpuInventory`` stands for "no vSphere lab": nodes get no GPUs.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# PCI device id -> (GPU Operator product label, memory MiB)
_BY_DEVICE_ID = {0x20B5: ("NVIDIA-A100-80GB-PCIe", 81920), 0x2331: ("NVIDIA-H100-PCIe", 81559),
                 0x20F1: ("NVIDIA-A100-PCIE-40GB", 40960), 0x26B5: ("NVIDIA-L40S", 46068)}
# PCI device name (the part in brackets) -> the same
_BY_NAME = {"A100 PCIe 80GB": _BY_DEVICE_ID[0x20B5], "H100 PCIe": _BY_DEVICE_ID[0x2331],
            "A100 PCIe 40GB": _BY_DEVICE_ID[0x20F1], "L40S": _BY_DEVICE_ID[0x26B5]}


@dataclass(frozen=True)
class VmGpus:
    """The passthrough GPUs of one powered-on VM."""

    count: int
    product: str = "NVIDIA-A100-80GB-PCIe"
    memory_mib: int = 81920


class GpuInventory(Protocol):
    def gpus_by_vm(self) -> dict[str, VmGpus] | None:
        """GPUs of each powered-on VM with at least one; None when no vSphere lab answers."""

    def describe(self) -> str:
        """One line for ``gpu-lab status``."""


class NoGpuInventory:
    def __init__(self, why: str = "no vSphere lab (vsphere.json absent): nodes get no GPUs"):
        self.why = why

    def gpus_by_vm(self) -> dict[str, VmGpus] | None:
        return None

    def describe(self) -> str:
        return self.why


class StaticGpuInventory:
    """A fake vSphere: a mutable table of VM name -> GPUs (thread-safe)."""

    def __init__(self, vms: dict[str, VmGpus] | None = None) -> None:
        self._lock = threading.Lock()
        self._vms = dict(vms or {})

    def set(self, vm: str, count: int, product: str = "NVIDIA-A100-80GB-PCIe",
            memory_mib: int = 81920) -> None:
        with self._lock:
            if count > 0:
                self._vms[vm] = VmGpus(count, product, memory_mib)
            else:
                self._vms.pop(vm, None)

    def remove_gpus(self, vm: str) -> None:
        self.set(vm, 0)

    def gpus_by_vm(self) -> dict[str, VmGpus] | None:
        with self._lock:
            return dict(self._vms)

    def describe(self) -> str:
        total = sum(v.count for v in self._vms.values())
        return f"static GPU inventory: {total} GPUs on {len(self._vms)} VMs (test fake)"


def reference_site(workers: int = 8, gpus: int = 2) -> dict[str, VmGpus]:
    """The reference site: one worker VM per ESXi host, two A100 80GB each."""
    return {f"ocp-worker-{i}": VmGpus(gpus) for i in range(workers)}


def product_of(device_name: str | None, device_id: int | None) -> tuple[str, int]:
    """The GPU Operator's product label and memory for a passthrough device."""
    if device_id is not None and device_id in _BY_DEVICE_ID:
        return _BY_DEVICE_ID[device_id]
    name = device_name or "NVIDIA GPU"
    inner = re.search(r"\[(.*)\]", name)
    text = inner.group(1) if inner else name
    if text in _BY_NAME:
        return _BY_NAME[text]
    memory = re.search(r"(\d+)\s*GB", text)
    label = "NVIDIA-" + re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
    return label, int(memory.group(1)) * 1024 if memory else 0


class VsphereGpuInventory:
    """Reads the vSphere lab through pyvmomi (cached for ``ttl`` seconds)."""

    def __init__(self, connection_file: Path, ttl: float = 2.0) -> None:
        self.connection_file = connection_file
        self.ttl = ttl
        self._cached: tuple[float, dict[str, VmGpus] | None] | None = None
        self._error = ""

    def _connect(self) -> Any:
        from pyVim.connect import SmartConnect

        info = json.loads(self.connection_file.read_text())
        ca = info.get("ca_path")
        context = ssl.create_default_context(cafile=ca) if ca else None
        return SmartConnect(host=info["hostname"], port=int(info["port"]),
                            user=info["username"], pwd=info["password"], sslContext=context,
                            disableSslCertValidation=context is None, connectionPoolTimeout=10)

    def _query(self) -> dict[str, VmGpus]:
        from pyVim.connect import Disconnect
        from pyVmomi import vim

        si = self._connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(content.rootFolder,
                                                           [vim.VirtualMachine], True)
            found: dict[str, VmGpus] = {}
            try:
                for vm in view.view:
                    if vm.runtime.powerState != vim.VirtualMachinePowerState.poweredOn:
                        continue
                    devices = [d for d in (vm.config.hardware.device if vm.config else [])
                               if isinstance(d, vim.vm.device.VirtualPCIPassthrough)]
                    if devices:
                        found[vm.name] = VmGpus(len(devices), *_describe(devices[0]))
            finally:
                view.Destroy()
            return found
        finally:
            Disconnect(si)

    def gpus_by_vm(self) -> dict[str, VmGpus] | None:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.ttl:
            return self._cached[1]
        if not self.connection_file.exists():
            self._error = f"no vSphere lab ({self.connection_file} absent): nodes get no GPUs"
            result = None
        else:
            try:
                result = self._query()
                self._error = ""
            except Exception as exc:  # the simulator may be down: say so, keep serving
                self._error = f"vSphere lab unreachable: {exc}"
                log.warning("%s", self._error)
                result = None
        self._cached = (now, result)
        return result

    def describe(self) -> str:
        if self._error:
            return self._error
        gpus = (self._cached or (0, None))[1]
        if gpus is None:
            return f"vSphere lab from {self.connection_file} (not queried yet)"
        total = sum(v.count for v in gpus.values())
        return (f"vSphere lab: {total} passthrough GPUs on {len(gpus)} powered-on VM(s) that "
                "have any")


def _describe(device: Any) -> tuple[str, int]:
    backing = device.backing
    device_id = getattr(backing, "deviceId", None)
    if device_id is None:
        allowed = getattr(backing, "allowedDevice", None) or []
        device_id = allowed[0].deviceId if allowed else None
    if isinstance(device_id, str):  # written as hex by some tools, decimal by others
        text = device_id.lower().removeprefix("0x")
        hexa = int(text, 16) if re.fullmatch(r"[0-9a-f]+", text) else None
        device_id = hexa if hexa in _BY_DEVICE_ID else (int(text) if text.isdigit() else hexa)
    if isinstance(device_id, int) and device_id < 0:
        device_id &= 0xFFFF
    return product_of(getattr(backing, "deviceName", None), device_id)


def inventory_for(home: Path) -> GpuInventory:
    """The inventory of a lab under ``home``: its vSphere lab, whenever vsphere.json exists."""
    return VsphereGpuInventory(home / "vsphere.json")
