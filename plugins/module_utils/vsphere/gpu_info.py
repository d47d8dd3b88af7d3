# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Inventory of every NVIDIA GPU across the selected hosts: one fleet-wide read.

One RetrievePropertiesEx for all hosts (and their cluster/datacenter names); a second,
small read only when some GPU is bound to a VM, to name those VMs.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import NotFoundError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_inventory,
    load_objects,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    GpuFilter,
    host_gpus,
    select_hosts,
)

try:
    from pyVmomi import vim
except ImportError:  # pragma: no cover
    vim = None

INFO_HOST_PROPS = (
    "hardware.pciDevice", "config.pciPassthruInfo", "config.assignableHardwareBinding",
    "runtime.connectionState", "runtime.inMaintenanceMode",
)


def run(client, hosts=None, clusters=None, datacenter=None, gpu_filter=None,
        vm_names=None) -> dict:
    """GPUs of the selected hosts; with ``vm_names`` also where those VMs run."""
    gpu_filter = gpu_filter or GpuFilter()
    vm_props = ("runtime.host", "runtime.powerState") if vm_names else None
    inv = load_inventory(client, host_props=INFO_HOST_PROPS, vm_props=vm_props)
    selected = select_hosts(inv, hosts, clusters, datacenter)
    vms = _vms(inv, vm_names or [])
    bound_refs = {b.vm._moId: b.vm for h in selected
                  for b in h.get("config.assignableHardwareBinding") or []}
    names = {r.obj._moId: r.name
             for r in load_objects(client, vim.VirtualMachine, list(bound_refs.values()), ["name"])}
    gpus, summary = [], {}
    for host in selected:
        found = [g for g in host_gpus(host, names, inv.host_cluster.get(host.name),
                                      inv.host_dc.get(host.name)) if gpu_filter.matches(g)]
        gpus += [g.as_dict() for g in found]
        summary[host.name] = {
            "cluster": inv.host_cluster.get(host.name),
            "datacenter": inv.host_dc.get(host.name),
            "connection_state": str(host.get("runtime.connectionState")),
            "in_maintenance_mode": bool(host.get("runtime.inMaintenanceMode")),
            "gpus": len(found),
            "passthrough_active": sum(g.passthrough_active for g in found),
            "free": sum(g.passthrough_active and not g.bound_vm for g in found),
            "reboot_pending": any(g.reboot_pending for g in found),
        }
    return {"gpus": gpus, "hosts": summary, "total": len(gpus), "vms": vms}


def _vms(inv, names) -> dict:
    by_name = inv.vm_by_name()
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise NotFoundError(f"unknown VM(s): {', '.join(unknown)}", missing=unknown)
    host_names = {h.obj._moId: h.name for h in inv.hosts}
    out = {}
    for name in names:
        rec = by_name[name]
        host = rec.get("runtime.host")
        out[name] = {"host": host_names.get(host._moId) if host is not None else None,
                     "power_state": str(rec.get("runtime.powerState"))}
    return out
