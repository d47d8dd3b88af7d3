"""gpu_fleet_report on the simulated reference site (8 ESXi hosts x 2 GPUs, one worker VM
each) and a lab API server whose 8 worker nodes advertise their GPUs: every row checked
against the simulator's and the API server's own state, then a VM that lost a GPU and a
node that lost its allocatable GPUs are named."""

from __future__ import annotations

import pytest
from kubernetes import client, config
from pyVim.task import WaitForTask
from pyVmomi import vim

from ..playbook import run_playbook
from .vsphere_helpers import enable_passthrough_raw, gpu_state, hosts, vm_gpus, vms

pytestmark = pytest.mark.lab

WORKERS = [{"host": f"esxi-{i}", "vm": f"ocp-worker-{i}"} for i in range(8)]


def _vcenter(lab) -> dict:
    return {"hostname": lab.hostname, "port": lab.port, "username": lab.username,
            "password": lab.password, "validate_certs": lab.validate_certs,
            "ca_path": lab.ca_path}


def _core(k8s):
    return client.CoreV1Api(config.new_client_from_config(str(k8s.kubeconfig),
                                                          context="lab-admin"))


def _advertise(core, node: str, gpus: int) -> None:
    """What the GPU Operator does on a node: allocatable GPUs and the GFD labels."""
    core.patch_node(node, {"metadata": {"labels": {
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100-80GB-PCIe",
        "nvidia.com/gpu.memory": "81920"}}})
    status = core.read_node_status(node).status
    allocatable = dict(status.allocatable or {}, **{"nvidia.com/gpu": str(gpus)})
    capacity = dict(status.capacity or {}, **{"nvidia.com/gpu": str(gpus)})
    core.patch_node_status(node, {"status": {"allocatable": allocatable, "capacity": capacity}})


def _report(vlab, k8s, tmp_path, check=False):
    task = {"name": "report", "llmops.gpu_stack.gpu_fleet_report": {
        "kubeconfig": str(k8s.kubeconfig), "context": "lab-admin",
        "vcenter": "{{ lab_vcenter }}", "workers": WORKERS, "gpus_per_vm": 2}}
    rc, results, out = run_playbook(tmp_path, [task], vars_file={"lab_vcenter": _vcenter(vlab)},
                                    extra=("--check",) if check else ())
    assert rc == 0, out[-3000:]
    return results[0]


def _independent(si, core) -> dict:
    """Per host: (NVIDIA GPUs, enabled, active), the worker VM's passthrough devices and
    power, the node's allocatable GPUs, read straight from the simulator and the API."""
    all_hosts, all_vms = hosts(si), vms(si)
    nodes = {n.metadata.name: int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
             for n in core.list_node().items}
    out = {}
    for w in WORKERS:
        state = gpu_state(all_hosts[w["host"]])
        vm = all_vms[w["vm"]]
        out[w["host"]] = {
            "gpus": len(state), "enabled": sum(e for e, _a in state.values()),
            "active": sum(a for _e, a in state.values()),
            "vm": w["vm"], "vm_gpus": len(vm_gpus(vm)), "power": str(vm.runtime.powerState),
            "vm_host": vm.runtime.host.name, "alloc": nodes[w["vm"]]}
    return out


def _as_read_by_report(res) -> dict:
    return {r["host"]: {
        "gpus": sum(g["count"] for g in r["gpus"]), "enabled": r["passthrough"]["enabled"],
        "active": r["passthrough"]["active"], "vm": r["vm"], "vm_gpus": r["vm_gpus"],
        "power": r["vm_power_state"], "vm_host": r["vm_host"],
        "alloc": r["node_allocatable_gpus"]} for r in res["fleet"]}


def _remove_one_gpu(si, name: str) -> None:
    vm = vms(si)[name]
    dev = next(d for d in vm.config.hardware.device
               if isinstance(d, vim.vm.device.VirtualPCIPassthrough))
    spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=dev)])
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.ReconfigVM_Task(spec))
    WaitForTask(vm.PowerOnVM_Task())


def test_fleet_report_matches_the_site_and_names_lost_gpus(vsphere_lab, vsphere_si,
                                                           k8s_lab_factory, tmp_path):
    # the site after stages 1-3: passthrough on, 2 GPUs per worker VM, nodes advertising
    enable_passthrough_raw(vsphere_si)
    attach = {"name": "attach", "llmops.gpu_stack.vm_gpu_passthrough": {
        "vm_name": "{{ item }}", "gpu_count": 2, "allow_power_cycle": True, "power_on": True,
        "drain": False},
        "loop": [w["vm"] for w in WORKERS]}
    rc, _results, out = run_playbook(tmp_path, [attach], env=vsphere_lab.connection_env())
    assert rc == 0, out[-3000:]
    k8s = k8s_lab_factory(controllers=False)
    core = _core(k8s)
    for w in WORKERS:
        _advertise(core, w["vm"], 2)

    res = _report(vsphere_lab, k8s, tmp_path)
    assert res["changed"] is False
    site = _independent(vsphere_si, core)
    assert sorted(site) == [f"esxi-{i}" for i in range(8)]
    assert all(s["gpus"] == s["active"] == s["vm_gpus"] == s["alloc"] == 2 for s in site.values())
    assert _as_read_by_report(res) == site
    assert [r["node"] for r in res["fleet"]] == [f"ocp-worker-{i}" for i in range(8)]
    assert {g["model"] for r in res["fleet"] for g in r["gpus"]} == {"a100-80g"}
    assert res["problems"] == []
    assert res["hardware"] == {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 80.0,
                               "gpu_model": "a100-80g"}
    assert len(res["table"]) == 9 and "esxi-7" in res["table"][8]

    # a VM loses a GPU, a node loses its allocatable GPUs
    _remove_one_gpu(vsphere_si, "ocp-worker-3")
    _advertise(core, "ocp-worker-5", 0)
    res = _report(vsphere_lab, k8s, tmp_path, check=True)
    site = _independent(vsphere_si, core)
    assert site["esxi-3"]["vm_gpus"] == 1 and site["esxi-5"]["alloc"] == 0
    assert _as_read_by_report(res) == site
    assert res["problems"] == [
        "VM ocp-worker-3 lost GPUs: 1 of 2 passthrough GPU(s) configured",
        "node ocp-worker-5 lost its GPUs: 0 allocatable nvidia.com/gpu (expected 2)",
    ]
    assert "lost GPUs" in res["table"][4] and "lost its GPUs" in res["table"][6]
    assert (res["hardware"]["nodes"], res["hardware"]["gpus_per_node"]) == (7, 2)


def test_fleet_report_from_the_cluster_alone(k8s_lab_factory, tmp_path):
    k8s = k8s_lab_factory(controllers=False, workers=3)
    core = _core(k8s)
    for i in range(3):
        _advertise(core, f"ocp-worker-{i}", 4 if i else 0)
    task = {"name": "report", "llmops.gpu_stack.gpu_fleet_report": {
        "kubeconfig": str(k8s.kubeconfig), "context": "lab-admin"}}
    rc, results, out = run_playbook(tmp_path, [task])
    assert rc == 0, out[-3000:]
    res = results[0]
    alloc = {n.metadata.name: int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
             for n in core.list_node().items if n.metadata.name.startswith("ocp-worker-")}
    assert {r["node"]: r["node_allocatable_gpus"] for r in res["fleet"]} == alloc
    assert res["problems"] == ["node ocp-worker-0 lost its GPUs: 0 allocatable nvidia.com/gpu"]
    assert res["hardware"] == {"nodes": 2, "gpus_per_node": 4, "gpu_memory_gib": 80.0,
                               "gpu_model": "NVIDIA-A100-80GB-PCIe"}
