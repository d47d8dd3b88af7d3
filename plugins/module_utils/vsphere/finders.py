# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Property-collector finders: the whole fleet in one RetrievePropertiesEx.

One traversal from the root folder (folders -> datacenters -> host folders ->
clusters/compute resources -> hosts, and optionally VM folders -> VMs) collects only
the properties asked for. ``Inventory`` resolves each host's cluster and datacenter
from the parent chain, so selecting by cluster or datacenter costs no extra call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

try:
    from pyVmomi import vim, vmodl
except ImportError:  # pragma: no cover
    vim = vmodl = None

HOST_GPU_PROPS = (
    "name", "parent", "hardware.pciDevice", "config.pciPassthruInfo",
    "config.assignableHardwareBinding", "hardware.systemInfo.uuid",
    "runtime.connectionState", "runtime.inMaintenanceMode", "vm",
    "configManager.pciPassthruSystem",
)


@dataclass
class Record:
    """One managed object and the properties read for it."""

    obj: object
    props: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.props.get("name", "")

    def get(self, key, default=None):
        return self.props.get(key, default)


def _traversal(include_vms: bool):
    def _sel(name):
        return vmodl.query.PropertyCollector.SelectionSpec(name=name)

    ts = vmodl.query.PropertyCollector.TraversalSpec
    specs = [
        ts(name="folder_children", type=vim.Folder, path="childEntity", skip=False,
           selectSet=[_sel("folder_children"), _sel("dc_hosts"), _sel("cr_hosts")]
           + ([_sel("dc_vms")] if include_vms else [])),
        ts(name="dc_hosts", type=vim.Datacenter, path="hostFolder", skip=False,
           selectSet=[_sel("folder_children")]),
        ts(name="cr_hosts", type=vim.ComputeResource, path="host", skip=False),
    ]
    if include_vms:
        specs.append(ts(name="dc_vms", type=vim.Datacenter, path="vmFolder", skip=False,
                        selectSet=[_sel("folder_children")]))
    return specs


def _filter_spec(root, props_by_type: dict, include_vms: bool):
    pc = vmodl.query.PropertyCollector
    prop_set = [pc.PropertySpec(type=t, pathSet=list(p), all=False)
                for t, p in props_by_type.items()]
    obj = pc.ObjectSpec(obj=root, skip=False, selectSet=_traversal(include_vms))
    return pc.FilterSpec(objectSet=[obj], propSet=prop_set, reportMissingObjectsInResults=False)


def _records(objects) -> list[Record]:
    return [Record(obj=o.obj, props={p.name: p.val for p in (o.propSet or [])}) for o in objects]


@dataclass
class Inventory:
    """Hosts (and VMs) with their datacenter and cluster names."""

    hosts: list[Record]
    vms: list[Record]
    host_dc: dict = field(default_factory=dict)
    host_cluster: dict = field(default_factory=dict)

    def host_by_name(self) -> dict:
        return {h.name: h for h in self.hosts}

    def vm_by_name(self) -> dict:
        return {v.name: v for v in self.vms}


def load_inventory(client, host_props=HOST_GPU_PROPS, vm_props=None) -> Inventory:
    """Read every host (and, with ``vm_props``, every VM) in one round-trip."""
    props = {
        vim.Folder: ["parent"],
        vim.Datacenter: ["name"],
        vim.ComputeResource: ["name", "parent"],
        vim.HostSystem: list(dict.fromkeys(("name", "parent", *host_props))),
    }
    if vm_props:
        props[vim.VirtualMachine] = list(dict.fromkeys(("name", *vm_props)))
    spec = _filter_spec(client.content.rootFolder, props, include_vms=bool(vm_props))
    records = _records(client.retrieve([spec], what="reading the vSphere inventory"))
    return _build_inventory(records)


def _key(obj) -> str:
    return getattr(obj, "_moId", None) or str(obj)


def _build_inventory(records: list[Record]) -> Inventory:
    by_id = {_key(r.obj): r for r in records}
    hosts = [r for r in records if isinstance(r.obj, vim.HostSystem)]
    vms = [r for r in records if isinstance(r.obj, vim.VirtualMachine)]
    inv = Inventory(hosts=hosts, vms=vms)
    for host in hosts:
        parent = by_id.get(_key(host.get("parent")))
        if parent is not None and isinstance(parent.obj, vim.ClusterComputeResource):
            inv.host_cluster[host.name] = parent.name
        node = parent
        for _depth in range(64):
            if node is None or isinstance(node.obj, vim.Datacenter):
                break
            node = by_id.get(_key(node.get("parent")))
        if node is not None:
            inv.host_dc[host.name] = node.name
    return inv


def load_objects(client, obj_type, refs, props) -> list[Record]:
    """Read ``props`` of the given objects in one round-trip."""
    if not refs:
        return []
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=ref, skip=False) for ref in refs],
        propSet=[pc.PropertySpec(type=obj_type, pathSet=list(props), all=False)],
        reportMissingObjectsInResults=False,
    )
    return _records(client.retrieve([spec], what=f"reading {len(refs)} {obj_type.__name__}"))
