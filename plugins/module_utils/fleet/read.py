# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Read the GPU fleet: vSphere (one property-collector read) and the cluster's nodes.

``run(k8s, vsphere_client, workers, gpus_per_vm)`` reads both sides and returns the
report of ``fleet.report.build``. ``vsphere_client`` may be None: the report is then
built from the cluster alone (GPU model and memory from the GPU Feature Discovery labels).
Nothing is written anywhere.
"""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.fleet import report
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import (
    load_inventory,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import (
    host_gpus,
    select_hosts,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu_info import (
    INFO_HOST_PROPS,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.vm_spec import (
    passthrough_devices,
)

_VM_PROPS = ("runtime.host", "runtime.powerState", "config.hardware.device")


def read_vsphere(client, host_names=None) -> dict:
    """Every selected host's NVIDIA GPUs and every VM's host, power and passthrough count."""
    inv = load_inventory(client, host_props=INFO_HOST_PROPS, vm_props=_VM_PROPS)
    selected = select_hosts(inv, sorted(set(host_names or ())))
    vm_names = {v.obj._moId: v.name for v in inv.vms}
    host_names_by_id = {h.obj._moId: h.name for h in inv.hosts}
    hosts = {h.name: {"cluster": inv.host_cluster.get(h.name),
                      "gpus": [g.as_dict() for g in host_gpus(h, vm_names,
                                                              inv.host_cluster.get(h.name),
                                                              inv.host_dc.get(h.name))]}
             for h in selected}
    vms = {}
    for rec in inv.vms:
        host = rec.get("runtime.host")
        vms[rec.name] = {
            "host": host_names_by_id.get(host._moId) if host is not None else None,
            "power_state": str(rec.get("runtime.powerState")),
            "passthrough": len(passthrough_devices(rec.get("config.hardware.device"))),
        }
    return {"hosts": hosts, "vms": vms}


def read_nodes(k8s) -> list[dict]:
    return [report.node_summary(n) for n in k8s.list("v1", "Node")]


def run(k8s, vsphere_client, workers: list[dict], gpus_per_vm: int = 0) -> dict:
    """Read both sides and build the report; ``workers`` as ``report.parse_workers``
    returns them (checked before any connection is made)."""
    vsphere = None
    if vsphere_client is not None:
        hosts = [w["host"] for w in workers] if all(w["host"] for w in workers) else None
        vsphere = read_vsphere(vsphere_client, hosts)
    return report.build(vsphere, read_nodes(k8s), workers, gpus_per_vm)
