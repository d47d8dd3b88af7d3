"""esxi_gpu_info against the simulator, compared with a raw pyvmomi read."""

from __future__ import annotations

import pytest

from .vsphere_helpers import enable_passthrough_raw, gpu_state, hosts, run_module, vms

pytestmark = pytest.mark.lab


def test_reports_every_gpu_like_the_simulator(vsphere_lab, vsphere_si, tmp_path):
    enable_passthrough_raw(vsphere_si, ["esxi-5"])
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_info",
                              {"vm_names": ["ocp-worker-5"]})
    assert rc == 0 and res["changed"] is False, out
    assert res["total"] == 16
    raw = {(n, pci): st for n, h in hosts(vsphere_si).items() for pci, st in gpu_state(h).items()}
    got = {(g["host"], g["pci_id"]): (g["passthrough_enabled"], g["passthrough_active"])
           for g in res["gpus"]}
    assert got == raw
    gpu = next(g for g in res["gpus"] if g["host"] == "esxi-5")
    assert gpu["device_id"] == "0x20b5" and gpu["vendor_id"] == "0x10de"
    assert gpu["model"] == "a100-80g" and gpu["memory_gb"] == 80
    assert gpu["cluster"] == "gpu-cluster" and gpu["datacenter"] == "gpu-dc"
    assert res["vms"] == {"ocp-worker-5": {"host": "esxi-5", "power_state": "poweredOn"}}
    assert res["hosts"]["esxi-5"]["free"] == 2 and res["hosts"]["esxi-4"]["free"] == 0


def test_bound_vm_and_filters(vsphere_lab, vsphere_si, tmp_path):
    enable_passthrough_raw(vsphere_si, ["esxi-6"])
    attach = {"vm_name": "ocp-worker-6", "gpu_count": 1, "allow_power_cycle": True,
              "drain": False}
    rc, _res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", attach)
    assert rc == 0, out
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_info",
                              {"esxi_hostnames": ["esxi-6"], "device_ids": ["20B5"]})
    assert rc == 0, out
    bound = [g for g in res["gpus"] if g["bound_vm"]]
    assert [g["bound_vm"] for g in bound] == ["ocp-worker-6"]
    vm = vms(vsphere_si)["ocp-worker-6"]
    raw_bound = [b.instanceId for b in hosts(vsphere_si)["esxi-6"].config.assignableHardwareBinding
                 if b.vm._moId == vm._moId]
    assert [g["pci_id"] for g in bound] == raw_bound
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_info", {"gpu_models": ["l40s"]})
    assert rc == 0 and res["total"] == 0, out
