# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A VM's passthrough-relevant state, and the ReconfigVM spec pieces for GPUs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    NVIDIA_VENDOR_ID,
    u16,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

MMIO_ON = "pciPassthru.use64bitMMIO"
MMIO_SIZE = "pciPassthru.64bitMMIOSizeGB"
VM_PROPS = (
    "name", "runtime.host", "runtime.powerState", "config.hardware.device",
    "config.hardware.memoryMB", "config.memoryReservationLockedToMax", "config.extraConfig",
    "config.firmware", "config.version", "config.cpuHotAddEnabled", "environmentBrowser",
    "config.uuid",
)


@dataclass
class PassthroughDevice:
    """A VirtualPCIPassthrough on a VM: static (pci_id) or dynamic (device_ids)."""

    device: object
    mode: str
    pci_id: str | None = None
    device_ids: tuple = ()
    assigned_id: str | None = None

    def label(self) -> str:
        if self.mode == "static":
            return self.pci_id
        ids = ",".join(f"0x{d:04x}" for d in self.device_ids)
        return f"dynamic[{ids}]" + (f"@{self.assigned_id}" if self.assigned_id else "")


def passthrough_devices(devices) -> list[PassthroughDevice]:
    out = []
    for dev in devices or []:
        if not isinstance(dev, vim.vm.device.VirtualPCIPassthrough):
            continue
        backing = dev.backing
        if isinstance(backing, vim.vm.device.VirtualPCIPassthrough.DynamicBackingInfo):
            ids = tuple(u16(a.deviceId) for a in backing.allowedDevice or []
                        if u16(a.vendorId) == NVIDIA_VENDOR_ID)
            out.append(PassthroughDevice(dev, "dynamic", device_ids=ids,
                                         assigned_id=backing.assignedId or None))
        elif isinstance(backing, vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo):
            out.append(PassthroughDevice(dev, "static", pci_id=backing.id))
    return out


@dataclass
class VmState:
    name: str
    record: object
    power_state: str
    host_ref: object
    memory_mb: int
    locked: bool
    firmware: str
    hw_version: int
    cpu_hot_add: bool
    extra: dict = field(default_factory=dict)
    passthrough: list = field(default_factory=list)

    @classmethod
    def from_record(cls, rec) -> VmState:
        extra = {o.key: str(o.value) for o in rec.get("config.extraConfig") or []}
        version = str(rec.get("config.version") or "vmx-0").removeprefix("vmx-")
        return cls(
            name=rec.name, record=rec, power_state=str(rec.get("runtime.powerState")),
            host_ref=rec.get("runtime.host"),
            memory_mb=int(rec.get("config.hardware.memoryMB") or 0),
            locked=bool(rec.get("config.memoryReservationLockedToMax")),
            firmware=str(rec.get("config.firmware") or "bios"),
            hw_version=int(version) if version.isdigit() else 0,
            cpu_hot_add=bool(rec.get("config.cpuHotAddEnabled")), extra=extra,
            passthrough=passthrough_devices(rec.get("config.hardware.device")),
        )

    def summary(self, matching) -> dict:
        """What ``--diff`` shows."""
        size = self.extra.get(MMIO_SIZE, "")
        return {
            "power_state": self.power_state,
            "gpus": sorted(d.label() for d in matching),
            "memory_reservation_locked_to_max": self.locked,
            "use_64bit_mmio": self.extra.get(MMIO_ON, "").upper() == "TRUE",
            "mmio_size_gb": int(size) if size.isdigit() else None,
            "cpu_hot_add": self.cpu_hot_add,
        }


def static_add(entry, key: int):
    """Add spec for one QueryConfigTarget pciPassthrough entry."""
    pci = entry.pciDevice
    backing = vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
        id=pci.id, deviceId=str(pci.deviceId), vendorId=pci.vendorId,
        systemId=entry.systemId, deviceName=pci.deviceName,
    )
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=vim.vm.device.VirtualPCIPassthrough(key=key, backing=backing))


def dynamic_add(device_id: int, key: int, label: str | None = None):
    allowed = vim.vm.device.VirtualPCIPassthrough.AllowedDevice(
        vendorId=NVIDIA_VENDOR_ID,
        deviceId=device_id if device_id < 0x8000 else device_id - 0x10000)
    backing = vim.vm.device.VirtualPCIPassthrough.DynamicBackingInfo(
        allowedDevice=[allowed], customLabel=label, deviceName="")
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=vim.vm.device.VirtualPCIPassthrough(key=key, backing=backing))


def remove(dev: PassthroughDevice):
    return vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=dev.device)


def option(key: str, value: str):
    return vim.option.OptionValue(key=key, value=value)
