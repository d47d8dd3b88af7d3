"""Injected faults end in a clean failure naming the host/VM, leave the others
consistent, and a rerun after clearing the fault converges; a third run changes nothing."""

from __future__ import annotations

import pytest
from gpu_lab.fixtures.vsphere import connect
from gpu_lab.vsphere import FaultInjector, Topology

from .vsphere_helpers import enable_passthrough_raw, gpu_state, hosts, run_module, vm_state, vms

pytestmark = pytest.mark.lab

ALL_HOSTS = {"clusters": ["gpu-cluster"], "parallel": 1}


def _host_states(si) -> dict:
    return {n: set(gpu_state(h).values()) for n, h in hosts(si).items()}


def _unchanged(lab, tmp_path, module: str, args: dict) -> dict:
    """Once the fault is cleared and a rerun converged, one more run changes nothing."""
    rc, res, out = run_module(lab, tmp_path, module, args)
    assert rc == 0 and res["changed"] is False, out
    return res


def test_update_passthru_fails_on_host_3(vsphere_lab, vsphere_si, vsphere_faults, tmp_path):
    vsphere_faults.inject("UpdatePassthruConfig", "HostConfigFault", target="esxi-3",
                          message="device 0000:17:00.0 busy in vmkernel")
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", ALL_HOSTS)
    assert rc != 0
    assert "passthrough update failed on host esxi-3" in res["msg"], res["msg"]
    assert "busy in vmkernel" in res["msg"]
    states = _host_states(vsphere_si)
    assert states["esxi-3"] == {(False, False)}
    # Every host is all-or-nothing: no half-configured host.
    assert all(len(s) == 1 for s in states.values()), states
    assert sorted(res["updated"]) == ["esxi-0", "esxi-1", "esxi-2"]
    assert res["not_attempted"] == ["esxi-4", "esxi-5", "esxi-6", "esxi-7"]
    vsphere_faults.clear()
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", ALL_HOSTS)
    assert rc == 0 and res["changed"] is True, out
    assert set(res["hosts_changed"]) == {f"esxi-{i}" for i in range(3, 8)}
    assert all(s == {(True, True)} for s in _host_states(vsphere_si).values())
    _unchanged(vsphere_lab, tmp_path, "esxi_gpu_passthrough", ALL_HOSTS)


def test_reboot_never_reconnects(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=3, apply_now=False, power_on=False,
                                       reboot_delay_ms=200))
    si, faults = connect(lab), FaultInjector(lab.fault_url, lab.ca_path)
    faults.never_reconnect("esxi-1")
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "reboot_timeout": 4}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc != 0
    assert "rolling reboot stopped at host(s) esxi-1" in res["msg"], res["msg"]
    assert "missing: esxi-1" in res["msg"]
    assert res["rebooted"] == ["esxi-0"] and res["not_attempted"] == ["esxi-2"]
    h = hosts(si)
    assert set(gpu_state(h["esxi-0"]).values()) == {(True, True)}
    assert h["esxi-0"].runtime.inMaintenanceMode is False
    assert set(gpu_state(h["esxi-2"]).values()) == {(True, False)}
    assert h["esxi-2"].runtime.inMaintenanceMode is False
    faults.clear()  # the host comes back
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough",
                              {**args, "reboot_timeout": 60})
    assert rc == 0, out
    for name, host in hosts(si).items():
        assert set(gpu_state(host).values()) == {(True, True)}, name
        assert host.runtime.inMaintenanceMode is False, name
    assert _unchanged(lab, tmp_path, "esxi_gpu_passthrough", args)["rebooted"] == []


def test_enter_maintenance_times_out(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=2, apply_now=False, power_on=False,
                                       reboot_delay_ms=200))
    si, faults = connect(lab), FaultInjector(lab.fault_url, lab.ca_path)
    faults.inject("EnterMaintenanceMode_Task", "Timedout", target="esxi-0",
                  message="operation timed out evacuating esxi-0")
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "reboot_timeout": 60}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc != 0 and "esxi-0" in res["msg"] and "timed out evacuating" in res["msg"], out
    h = hosts(si)
    assert h["esxi-0"].runtime.inMaintenanceMode is False
    assert all(set(gpu_state(x).values()) == {(True, False)} for x in h.values())
    faults.clear()
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and sorted(res["rebooted"]) == ["esxi-0", "esxi-1"], out
    assert _unchanged(lab, tmp_path, "esxi_gpu_passthrough", args)["rebooted"] == []


def test_reconfig_no_disk_space(vsphere_lab, vsphere_si, vsphere_faults, tmp_path):
    enable_passthrough_raw(vsphere_si)
    vsphere_faults.inject("ReconfigVM_Task", "NoDiskSpace", target="ocp-worker-2",
                          fields={"datastore": "LocalDS_0"}, message="no space on LocalDS_0")
    args = {"vm_name": "ocp-worker-2", "gpu_count": 2, "allow_power_cycle": True,
            "drain": False}
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc != 0
    assert res["msg"].startswith("VM ocp-worker-2:") and "NoDiskSpace" in res["msg"], res["msg"]
    state = vm_state(vms(vsphere_si)["ocp-worker-2"])
    assert state["gpus"] == [] and state["power"] == "poweredOn" and state["locked"] is False
    vsphere_faults.clear()
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is True, out
    assert len(vm_state(vms(vsphere_si)["ocp-worker-2"])["gpus"]) == 2
    _unchanged(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)


def test_power_on_fails(vsphere_lab, vsphere_si, vsphere_faults, tmp_path):
    enable_passthrough_raw(vsphere_si)
    vsphere_faults.inject("PowerOnVM_Task", "GenericVmConfigFault", target="ocp-worker-4",
                          message="Module 'DevicePowerOn' power on failed.")
    args = {"vm_name": "ocp-worker-4", "gpu_count": 2, "allow_power_cycle": True,
            "power_on": True, "drain": False}
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc != 0
    assert "powering on VM ocp-worker-4 failed" in res["msg"], res["msg"]
    assert "DevicePowerOn" in res["msg"]
    others = {n: vm_state(v)["power"] for n, v in vms(vsphere_si).items() if n != "ocp-worker-4"}
    assert set(others.values()) == {"poweredOn"}
    assert vm_state(vms(vsphere_si)["ocp-worker-4"])["power"] == "poweredOff"
    vsphere_faults.clear()
    rc, res, out = run_module(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is True, out
    state = vm_state(vms(vsphere_si)["ocp-worker-4"])
    assert state["power"] == "poweredOn" and len(state["gpus"]) == 2
    _unchanged(vsphere_lab, tmp_path, "vm_gpu_passthrough", args)


def test_permission_denied_names_host(vsphere_lab, vsphere_si, vsphere_faults, tmp_path):
    vsphere_faults.inject("UpdatePassthruConfig", "NoPermission", target="esxi-6",
                          fields={"privilegeId": "Host.Config.PciPassthru"},
                          message="Permission to perform this operation was denied.")
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough",
                              {"esxi_hostnames": ["esxi-6", "esxi-7"], "parallel": 1})
    assert rc != 0 and "esxi-6" in res["msg"] and "NoPermission" in res["msg"], res["msg"]
    assert _host_states(vsphere_si)["esxi-6"] == {(False, False)}
    vsphere_faults.clear()
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough",
                              {"esxi_hostnames": ["esxi-6", "esxi-7"]})
    assert rc == 0, out
    assert _host_states(vsphere_si)["esxi-6"] == {(True, True)}
    _unchanged(vsphere_lab, tmp_path, "esxi_gpu_passthrough",
               {"esxi_hostnames": ["esxi-6", "esxi-7"]})


def test_transient_host_fault_is_retried(vsphere_lab, vsphere_si, vsphere_faults, tmp_path):
    vsphere_faults.inject("UpdatePassthruConfig", "HostNotConnected", target="esxi-5", count=2)
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough",
                              {"esxi_hostnames": ["esxi-5"]})
    assert rc == 0 and res["changed"] is True, out
    assert vsphere_faults.pending() == []
    assert _host_states(vsphere_si)["esxi-5"] == {(True, True)}
