"""Nothing is submitted twice and an operator's maintenance mode is respected.

Lost responses are played by the simulator's ``LoseResponse`` fault: the method runs
(the task is accepted) and the connection is then dropped without an answer. Every
check reads the simulator directly with raw pyvmomi: the task list vCenter keeps
(``TaskManager.recentTask``), the VM's devices, the hosts' boot times.
"""

from __future__ import annotations

import pytest
from gpu_lab.fixtures.vsphere import connect
from gpu_lab.vsphere import FaultInjector, Topology

from .vsphere_helpers import enable_passthrough_raw, gpu_state, hosts, run_module, vm_state, vms

pytestmark = pytest.mark.lab

LOSE = "LoseResponse"


def _tasks_on(si, entity, description: str) -> list:
    """vCenter's recorded tasks on one entity whose descriptionId is ``<Type>.<description>``
    (raw read; the simulator's ids: reconfigVm, rebootHost, exitMaintenanceMode)."""
    out = []
    for task in si.content.taskManager.recentTask:
        info = task.info
        if (info.entity is not None and info.entity._moId == entity._moId
                and info.descriptionId.rsplit(".", 1)[-1] == description):
            out.append(info)
    return out


def test_lost_reconfig_response_adds_the_gpus_once(vsphere_lab, vsphere_si, vsphere_faults,
                                                    tmp_path):
    enable_passthrough_raw(vsphere_si)
    vsphere_faults.inject("ReconfigVM_Task", LOSE, target="ocp-worker-2")
    args = {"vm_name": "ocp-worker-2", "gpu_count": 1, "allow_power_cycle": True}
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert vsphere_faults.pending() == [], out  # the response was really lost once
    assert rc == 0 and res["changed"] is True, out
    vm = vms(vsphere_si)["ocp-worker-2"]
    reconfigs = _tasks_on(vsphere_si, vm, "reconfigVm")
    assert len(reconfigs) == 1, [str(t.state) for t in reconfigs]
    state = vm_state(vm)
    assert len(state["gpus"]) == 1 and state["power"] == "poweredOn", state
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is False, out


def test_lost_reboot_response_reboots_once(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=2, apply_now=False, power_on=False,
                                       reboot_delay_ms=100))
    si, faults = connect(lab), FaultInjector(lab.fault_url, lab.ca_path)
    faults.inject("RebootHost_Task", LOSE, target="esxi-0")
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "reboot_timeout": 60}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert faults.pending() == []
    assert rc == 0 and sorted(res["rebooted"]) == ["esxi-0", "esxi-1"], out
    for name, host in hosts(si).items():
        assert len(_tasks_on(si, host, "rebootHost")) == 1, name
        assert set(gpu_state(host).values()) == {(True, True)}, name
        assert host.runtime.inMaintenanceMode is False, name


def test_operator_maintenance_is_left_alone(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=3, apply_now=False, power_on=False,
                                       reboot_delay_ms=100))
    si = connect(lab)
    operator = hosts(si)["esxi-1"]
    operator.EnterMaintenanceMode_Task(timeout=0)
    boot_before = {n: h.runtime.bootTime for n, h in hosts(si).items()}
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "reboot_timeout": 60}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and sorted(res["rebooted"]) == ["esxi-0", "esxi-1", "esxi-2"], out
    after = hosts(si)
    assert after["esxi-1"].runtime.inMaintenanceMode is True  # the operator's, kept
    assert after["esxi-0"].runtime.inMaintenanceMode is False
    assert after["esxi-2"].runtime.inMaintenanceMode is False
    for name, host in after.items():
        assert host.runtime.bootTime != boot_before[name], name
        assert set(gpu_state(host).values()) == {(True, True)}, name
    assert len(_tasks_on(si, after["esxi-1"], "exitMaintenanceMode")) == 0
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is False, out
    assert hosts(si)["esxi-1"].runtime.inMaintenanceMode is True
