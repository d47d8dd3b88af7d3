"""esxi_gpu_passthrough against the simulator: check mode, apply, rerun, diff, cleanup,
and the reboot path on hosts that cannot apply changes without a reboot."""

from __future__ import annotations

import pytest
from gpu_lab.fixtures.vsphere import connect
from gpu_lab.vsphere import Topology

from .vsphere_helpers import gpu_state, hosts, run_module, snapshot

pytestmark = pytest.mark.lab

SELECT = {"clusters": ["gpu-cluster"], "gpu_models": ["a100-80g"]}


def test_full_cycle(vsphere_lab, vsphere_si, tmp_path):
    before = snapshot(vsphere_si)

    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", SELECT,
                              check=True, diff=True)
    assert rc == 0, out
    assert res["changed"] is True
    assert sorted(res["hosts_changed"]) == [f"esxi-{i}" for i in range(8)]
    assert snapshot(vsphere_si) == before, "check mode changed the simulator"
    assert res["diff"]["after"]["esxi-0"]["0000:17:00.0"]["enabled"] is True

    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", SELECT, diff=True)
    assert rc == 0, out
    assert res["changed"] is True and res["reboot_required"] == []
    assert res["diff"]["before"]["esxi-3"]["0000:31:00.0"] == {"enabled": False, "active": False}
    assert res["diff"]["after"]["esxi-3"]["0000:31:00.0"] == {"enabled": True, "active": True}
    for name, host in hosts(vsphere_si).items():
        assert set(gpu_state(host).values()) == {(True, True)}, name

    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", SELECT)
    assert rc == 0, out
    assert res["changed"] is False and res["hosts_changed"] == []

    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough",
                              {**SELECT, "state": "disabled"})
    assert rc == 0 and res["changed"] is True, out
    assert snapshot(vsphere_si) == before


def test_selected_hosts_and_pci_ids_only(vsphere_lab, vsphere_si, tmp_path):
    args = {"esxi_hostnames": ["esxi-2"], "pci_ids": ["0000:31:00.0"]}
    rc, res, out = run_module(vsphere_lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and res["hosts_changed"] == ["esxi-2"], out
    state = {n: gpu_state(h) for n, h in hosts(vsphere_si).items()}
    assert state["esxi-2"] == {"0000:17:00.0": (False, False), "0000:31:00.0": (True, True)}
    assert all(set(s.values()) == {(False, False)} for n, s in state.items() if n != "esxi-2")


def test_reboot_required_then_rolling_reboot(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=3, apply_now=False, power_on=False,
                                       reboot_delay_ms=300))
    si = connect(lab)
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough",
                              {"clusters": ["gpu-cluster"]})
    assert rc == 0, out
    assert res["changed"] is True
    assert sorted(res["reboot_required"]) == ["esxi-0", "esxi-1", "esxi-2"]
    assert all(set(gpu_state(h).values()) == {(True, False)} for h in hosts(si).values())

    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough",
                              {"clusters": ["gpu-cluster"], "reboot": "if_needed",
                               "reboot_timeout": 60, "batch_size": 2})
    assert rc == 0, out
    assert res["changed"] is True and sorted(res["rebooted"]) == ["esxi-0", "esxi-1", "esxi-2"]
    assert res["reboot_required"] == []
    # the progress says which hosts are rebooting, batch by batch
    assert [x for x in res["progress"] if not x.startswith("+")] == [
        "rebooting esxi-0, esxi-1", "rebooting esxi-2"]
    for host in hosts(si).values():
        assert set(gpu_state(host).values()) == {(True, True)}
        assert host.runtime.inMaintenanceMode is False
        assert str(host.runtime.connectionState) == "connected"

    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough",
                              {"clusters": ["gpu-cluster"], "reboot": "if_needed"})
    assert rc == 0 and res["changed"] is False and res["rebooted"] == [], out
    assert res["progress"] == []


def test_reboot_refused_while_vms_run(vsphere_lab_factory, tmp_path):
    lab = vsphere_lab_factory(Topology(hosts=2, apply_now=False))
    si = connect(lab)
    before = snapshot(si)
    rc, res, _out = run_module(lab, tmp_path, "esxi_gpu_passthrough",
                               {"clusters": ["gpu-cluster"], "reboot": "if_needed"})
    assert rc != 0
    assert "still run VMs" in res["msg"] and "ocp-worker-1" in res["msg"], res["msg"]
    assert snapshot(si) == before
