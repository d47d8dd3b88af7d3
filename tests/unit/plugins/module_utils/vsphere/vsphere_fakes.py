"""Fake inventory records built from real pyvmomi data objects (no network)."""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    Inventory,
    Record,
)
from pyVmomi import vim

PCI_IDS = ("0000:17:00.0", "0000:31:00.0")


def host(name, *, enabled=(False, False), active=(False, False), device_id=0x20B5,
         bound=None, state="connected", rebind=True, in_mm=False, vm_refs=()):
    devices = [vim.host.PciDevice(id="0000:00:00.0", vendorId=0x8086, deviceId=0x2020,
                                  vendorName="Intel", deviceName="bridge")]
    infos = [vim.host.PciPassthruInfo(id="0000:00:00.0", passthruCapable=False)]
    for i, pci in enumerate(PCI_IDS[: len(enabled)]):
        signed = device_id - 0x10000 if device_id >= 0x8000 else device_id
        devices.append(vim.host.PciDevice(id=pci, vendorId=0x10DE, deviceId=signed,
                                          vendorName="NVIDIA Corporation",
                                          deviceName="GA100 [A100 PCIe 80GB]"))
        infos.append(vim.host.PciPassthruInfo(id=pci, passthruCapable=True,
                                              passthruEnabled=enabled[i],
                                              passthruActive=active[i]))
    bindings = [vim.host.AssignableHardwareBinding(instanceId=pci, vm=vim.VirtualMachine(vm))
                for pci, vm in (bound or {}).items()]
    return Record(obj=vim.HostSystem(f"host-{name}"), props={
        "name": name, "hardware.pciDevice": devices, "config.pciPassthruInfo": infos,
        "config.assignableHardwareBinding": bindings, "runtime.connectionState": state,
        "runtime.inMaintenanceMode": in_mm, "vm": [vim.VirtualMachine(v) for v in vm_refs],
        "capability.deviceRebindWithoutRebootSupported": rebind, "customValue": [],
    })


def inventory(*hosts, cluster="gpu-cluster", dc="gpu-dc") -> Inventory:
    inv = Inventory(hosts=list(hosts), vms=[])
    for h in hosts:
        inv.host_cluster[h.name] = cluster
        inv.host_dc[h.name] = dc
    return inv
