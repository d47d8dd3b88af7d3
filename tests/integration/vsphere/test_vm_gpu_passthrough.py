"""vm_gpu_passthrough against the simulator: static and dynamic DirectPath."""

from __future__ import annotations

import pytest

from .vsphere_helpers import enable_passthrough_raw, hosts, run_module, snapshot, vm_state, vms

pytestmark = pytest.mark.lab

ARGS = {"vm_name": "ocp-worker-0", "gpu_count": 2, "gpu_models": ["a100-80g"],
        "allow_power_cycle": True, "drain": False}  # no cluster here: test_vm_drain.py


def test_static_full_cycle(vsphere_lab, vsphere_si, tmp_path):
    enable_passthrough_raw(vsphere_si)
    before = snapshot(vsphere_si)

    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", ARGS,
                              check=True, diff=True)
    assert rc == 0 and res["changed"] is True, out
    assert snapshot(vsphere_si) == before, "check mode changed the simulator"
    assert res["diff"]["before"]["gpus"] == []
    assert res["diff"]["after"]["gpus"] == ["0000:17:00.0", "0000:31:00.0"]
    assert res["diff"]["after"]["mmio_size_gb"] == 512

    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", ARGS, diff=True)
    assert rc == 0 and res["changed"] is True and res["power_cycled"] is True, out
    assert res["diff"]["before"]["gpus"] == []
    assert res["diff"]["after"]["gpus"] == ["0000:17:00.0", "0000:31:00.0"]
    vm = vms(vsphere_si)["ocp-worker-0"]
    host = hosts(vsphere_si)["esxi-0"]
    state = vm_state(vm)
    assert state["power"] == "poweredOn" and state["locked"] is True
    assert state["mmio"] == "TRUE" and state["mmio_size"] == "512"  # 2 x 80 GB -> 256 -> x2
    assert state["gpus"] == [("static", "0000:17:00.0", str(0x20B5), host.hardware.systemInfo.uuid),
                             ("static", "0000:31:00.0", str(0x20B5), host.hardware.systemInfo.uuid)]
    assert {b.instanceId for b in host.config.assignableHardwareBinding
            if b.vm._moId == vm._moId} == {"0000:17:00.0", "0000:31:00.0"}

    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", ARGS)
    assert rc == 0 and res["changed"] is False and res["power_cycled"] is False, out

    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough",
                              {**ARGS, "state": "absent"})
    assert rc == 0 and res["changed"] is True, out
    state = vm_state(vms(vsphere_si)["ocp-worker-0"])
    assert state["gpus"] == [] and state["power"] == "poweredOn"


def test_dynamic_directpath(vsphere_lab, vsphere_si, tmp_path):
    enable_passthrough_raw(vsphere_si, ["esxi-1"])
    args = {**ARGS, "vm_name": "ocp-worker-1", "mode": "dynamic", "gpu_count": 1}
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is True, out
    state = vm_state(vms(vsphere_si)["ocp-worker-1"])
    assert len(state["gpus"]) == 1
    mode, device_id, assigned = state["gpus"][0]
    assert (mode, device_id) == ("dynamic", 0x20B5) and assigned.startswith("0000:")
    assert state["mmio_size"] == "256"  # 80 GB -> 128 -> x2
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is False, out


def test_powered_off_vm_is_left_off_unless_power_on(vsphere_lab, vsphere_si, tmp_path):
    enable_passthrough_raw(vsphere_si, ["esxi-2"])
    vms(vsphere_si)["ocp-worker-2"].PowerOffVM_Task()
    args = {"vm_name": "ocp-worker-2", "gpu_count": 1}
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is True and res["power_cycled"] is False, out
    assert vm_state(vms(vsphere_si)["ocp-worker-2"])["power"] == "poweredOff"
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough",
                              {**args, "power_on": True})
    assert rc == 0 and res["changed"] is True, out
    assert vm_state(vms(vsphere_si)["ocp-worker-2"])["power"] == "poweredOn"
