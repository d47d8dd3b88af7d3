# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""GPU facts: which PCI devices are NVIDIA GPUs, their models, selection and sizing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    NotFoundError,
)

NVIDIA_VENDOR_ID = 0x10DE
MAX_PASSTHROUGH_DEVICES = 16

# device id -> (short model name, memory in GB); memory drives the 64-bit MMIO size.
KNOWN_GPUS = {
    0x20B5: ("a100-80g", 80),
    0x20F1: ("a100-40g", 40),
    0x2331: ("h100-pcie", 80),
    0x2321: ("h100-nvl", 94),
    0x26B9: ("l40s", 48),
    0x26B5: ("l40", 48),
    0x2236: ("a10", 24),
    0x27B8: ("l4", 24),
    0x1EB8: ("t4", 16),
}


def u16(value) -> int:
    """pyvmomi gives PCI ids as signed shorts: 0x8xxx and up come out negative."""
    return int(value) & 0xFFFF


@dataclass
class Gpu:
    """One NVIDIA GPU of one host, with its passthrough state."""

    host: str
    pci_id: str
    vendor_id: str
    device_id: str
    vendor_name: str
    device_name: str
    model: str | None
    memory_gb: int | None
    passthrough_capable: bool
    passthrough_enabled: bool
    passthrough_active: bool
    bound_vm: str | None = None
    cluster: str | None = None
    datacenter: str | None = None

    @property
    def reboot_pending(self) -> bool:
        return self.passthrough_enabled != self.passthrough_active

    def as_dict(self) -> dict:
        data = asdict(self)
        data["reboot_pending"] = self.reboot_pending
        return data


def host_gpus(host, vm_names: dict | None = None, cluster=None, datacenter=None) -> list[Gpu]:
    """The NVIDIA GPUs of a host record (``finders.Record`` with HOST_GPU_PROPS)."""
    infos = {i.id: i for i in (host.get("config.pciPassthruInfo") or [])}
    bound = {b.instanceId: b.vm for b in (host.get("config.assignableHardwareBinding") or [])}
    out = []
    for dev in host.get("hardware.pciDevice") or []:
        if u16(dev.vendorId) != NVIDIA_VENDOR_ID:
            continue
        info = infos.get(dev.id)
        model, memory = KNOWN_GPUS.get(u16(dev.deviceId), (None, None))
        vm_ref = bound.get(dev.id)
        out.append(Gpu(
            host=host.name, pci_id=dev.id, vendor_id=f"0x{u16(dev.vendorId):04x}",
            device_id=f"0x{u16(dev.deviceId):04x}", vendor_name=dev.vendorName,
            device_name=dev.deviceName, model=model, memory_gb=memory,
            passthrough_capable=bool(info and info.passthruCapable),
            passthrough_enabled=bool(info and info.passthruEnabled),
            passthrough_active=bool(info and info.passthruActive),
            bound_vm=(vm_names or {}).get(vm_ref._moId, vm_ref._moId) if vm_ref else None,
            cluster=cluster, datacenter=datacenter,
        ))
    return out


def parse_device_id(value) -> int:
    """A PCI device id in hex, with or without 0x (``0x20b5``, ``20B5``)."""
    text = str(value).strip().lower().removeprefix("0x")
    if not 1 <= len(text) <= 4 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInputError(f"not a PCI device id: {value!r} (4 hex digits, e.g. 0x20b5)")
    return int(text, 16)


@dataclass(frozen=True)
class GpuFilter:
    """Which GPUs a request means: by model name, device id or PCI id (all optional)."""

    models: tuple = ()
    device_ids: tuple = ()
    pci_ids: tuple = ()

    @classmethod
    def build(cls, models=None, device_ids=None, pci_ids=None) -> GpuFilter:
        return cls(
            models=tuple(m.lower() for m in models or ()),
            device_ids=tuple(parse_device_id(d) for d in device_ids or ()),
            pci_ids=tuple(p.lower() for p in pci_ids or ()),
        )

    def matches(self, gpu: Gpu) -> bool:
        if self.models and not any(
            m == (gpu.model or "") or m in gpu.device_name.lower() for m in self.models
        ):
            return False
        if self.device_ids and int(gpu.device_id, 16) not in self.device_ids:
            return False
        return not (self.pci_ids and gpu.pci_id.lower() not in self.pci_ids)

    def describe(self) -> str:
        parts = [f"model in {list(self.models)}" if self.models else "",
                 f"device id in {[hex(d) for d in self.device_ids]}" if self.device_ids else "",
                 f"PCI id in {list(self.pci_ids)}" if self.pci_ids else ""]
        return " and ".join(p for p in parts if p) or "any NVIDIA GPU"


def selection_argument_spec() -> dict:
    """Host and GPU selection options shared by the ESXi modules (doc fragment
    llmops.gpu_stack.gpu_selection)."""
    return {
        "esxi_hostnames": {"type": "list", "elements": "str", "default": []},
        "clusters": {"type": "list", "elements": "str", "default": []},
        "datacenter": {"type": "str"},
        "gpu_models": {"type": "list", "elements": "str", "default": []},
        "device_ids": {"type": "list", "elements": "str", "default": []},
    }


def select_hosts(inventory, hosts=None, clusters=None, datacenter=None) -> list:
    """Host records named by the request; unknown names fail before anything is done."""
    by_name = inventory.host_by_name()
    unknown = [h for h in hosts or () if h not in by_name]
    if unknown:
        raise NotFoundError(f"unknown ESXi host(s): {', '.join(unknown)}", missing=unknown)
    known_clusters = set(inventory.host_cluster.values())
    bad_clusters = [c for c in clusters or () if c not in known_clusters]
    if bad_clusters:
        raise NotFoundError(f"unknown cluster(s): {', '.join(bad_clusters)}", missing=bad_clusters)
    if datacenter and datacenter not in set(inventory.host_dc.values()):
        raise NotFoundError(f"unknown datacenter: {datacenter}")
    selected = []
    for host in inventory.hosts:
        if hosts and host.name not in hosts:
            continue
        if clusters and inventory.host_cluster.get(host.name) not in clusters:
            continue
        if datacenter and inventory.host_dc.get(host.name) != datacenter:
            continue
        selected.append(host)
    return sorted(selected, key=lambda h: h.name)


def mmio_size_gb(memory_gb_each: list[int]) -> int:
    """64-bit MMIO window: total GPU memory rounded up to a power of two, then doubled."""
    total = sum(memory_gb_each)
    if total <= 0:
        return 0
    size = 1
    while size < total:
        size *= 2
    return size * 2
