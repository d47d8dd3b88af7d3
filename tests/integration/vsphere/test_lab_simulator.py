"""The lab simulator itself: fault-injection API semantics and modelled vSphere rules,
checked with raw pyvmomi (the collection is not involved)."""

from __future__ import annotations

import urllib.error

import pytest
from gpu_lab.vsphere import state as lab_state
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from .vsphere_helpers import enable_passthrough_raw, gpu_state, hosts, vms

pytestmark = pytest.mark.lab


def _update(host, enabled=True):
    cfg = [vim.host.PciPassthruConfig(id=pci, passthruEnabled=enabled) for pci in gpu_state(host)]
    host.configManager.pciPassthruSystem.UpdatePassthruConfig(cfg)


def test_injection_targets_counts_and_clear(vsphere_si, vsphere_faults):
    all_hosts = hosts(vsphere_si)
    vsphere_faults.inject("UpdatePassthruConfig", "HostConfigFault", target="esxi-1", count=2)
    _update(all_hosts["esxi-0"])  # another host: not consumed
    assert vsphere_faults.pending()[0]["fired"] == 0
    for _attempt in range(2):
        with pytest.raises(vim.fault.HostConfigFault):
            _update(all_hosts["esxi-1"])
    assert vsphere_faults.pending() == []
    _update(all_hosts["esxi-1"])
    assert set(gpu_state(all_hosts["esxi-1"]).values()) == {(True, True)}
    vsphere_faults.inject("UpdatePassthruConfig", "", target="esxi-2", delay_ms=1)
    _update(all_hosts["esxi-2"])  # a delay alone does not fail the call
    assert vsphere_faults.pending() == []
    vsphere_faults.inject("Anything", "NoDiskSpace")
    assert vsphere_faults.clear() == []


def test_injection_rejects_unknown_fault_types(vsphere_faults):
    with pytest.raises(urllib.error.HTTPError) as err:
        vsphere_faults.inject("ReconfigVM_Task", "NotAFault")
    assert err.value.code == 400


def test_modelled_rules(vsphere_si):
    enable_passthrough_raw(vsphere_si, ["esxi-0"])
    vm = vms(vsphere_si)["ocp-worker-0"]
    host = hosts(vsphere_si)["esxi-0"]
    with pytest.raises(vim.fault.InvalidState):  # reboot outside maintenance mode
        WaitForTask(host.RebootHost_Task(force=False))
    with pytest.raises(vim.fault.Timedout):  # running VM cannot be evacuated
        WaitForTask(host.EnterMaintenanceMode_Task(timeout=0))
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="k", value="1")])
    WaitForTask(vm.ReconfigVM_Task(spec))
    spec.extraConfig[0].value = "2"
    WaitForTask(vm.ReconfigVM_Task(spec))
    assert [o.value for o in vm.config.extraConfig if o.key == "k"] == ["2"]  # replaced
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        vim.HostPciPassthruSystem("no-such", vsphere_si._stub).Refresh()


def test_state_file_is_private(vsphere_lab, tmp_path):
    path = lab_state.save_state(vsphere_lab, tmp_path / "vsphere.json")
    assert path.stat().st_mode & 0o077 == 0
    loaded = lab_state.load_state(path)
    assert loaded.password == vsphere_lab.password and loaded.port == vsphere_lab.port
