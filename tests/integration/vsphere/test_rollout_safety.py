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
    args = {"vm_name": "ocp-worker-2", "gpu_count": 1, "allow_power_cycle": True,
            "drain": False}
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
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and res["changed"] is False and res["rebooted"] == [], out
    assert all(len(_tasks_on(si, h, "rebootHost")) == 1 for h in hosts(si).values())


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


# ---- concurrent rollouts take turns (the per-cluster lock on vCenter) ----------------

LOCK_PREFIX = "llmops.gpu_stack.rollout_lock."


def _maintenance_windows(si) -> dict:
    """{host: [(entered, left)]} from vCenter's task list (enter/exit completions)."""
    windows: dict = {}
    open_since: dict = {}
    infos = sorted((t.info for t in si.content.taskManager.recentTask
                    if str(t.info.state) == "success"), key=lambda i: i.completeTime)
    names = {h._moId: n for n, h in hosts(si).items()}
    for info in infos:
        what = info.descriptionId.rsplit(".", 1)[-1]
        host = names.get(getattr(info.entity, "_moId", None))
        if what == "enterMaintenanceMode":
            open_since[host] = info.completeTime
        elif what == "exitMaintenanceMode":
            windows.setdefault(host, []).append((open_since.pop(host), info.completeTime))
    return windows


def _max_overlap(windows: dict) -> int:
    edges = sorted((t, d) for spans in windows.values() for a, b in spans
                   for t, d in ((a, 1), (b, -1)))
    now = peak = 0
    for _t, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


def _lock_fields(si) -> list:
    return [f for f in si.content.customFieldsManager.field if f.name.startswith(LOCK_PREFIX)]


def test_two_concurrent_rollouts_take_turns(vsphere_lab_factory, tmp_path):
    import threading
    import time

    lab = vsphere_lab_factory(Topology(hosts=4, apply_now=False, power_on=False,
                                       reboot_delay_ms=700))
    si = connect(lab)
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "reboot_timeout": 60,
            "batch_size": 1, "parallel": 1}
    results: dict = {}

    def _run(n):
        if n == 2:  # the second starts while the first rolls (or is about to)
            time.sleep(3)
        run_dir = tmp_path / f"run{n}"
        run_dir.mkdir()
        results[n] = run_module(lab, run_dir, "esxi_gpu_passthrough", args)

    threads = [threading.Thread(target=_run, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for rc, _res, out in results.values():
        assert rc == 0, out
    rebooted = [h for _rc, res, _out in results.values() for h in res["rebooted"]]
    assert sorted(rebooted) == ["esxi-0", "esxi-1", "esxi-2", "esxi-3"]  # each once
    windows = _maintenance_windows(si)
    assert sorted(windows) == ["esxi-0", "esxi-1", "esxi-2", "esxi-3"], windows
    assert _max_overlap(windows) == 1, windows  # batch_size held across both runs
    for name, host in hosts(si).items():
        assert set(gpu_state(host).values()) == {(True, True)}, name
        assert host.runtime.inMaintenanceMode is False, name
    assert _lock_fields(si) == []  # released


def _plant_lock(si, expires: str, holder="other-controller pid 1 run x") -> None:
    cluster = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0]
    cfm = si.content.customFieldsManager
    field = cfm.AddCustomFieldDef(name=LOCK_PREFIX + cluster._moId, moType=type(cluster))
    cfm.SetField(entity=cluster, key=field.key, value=f"holder={holder};expires={expires}")


def test_held_lock_blocks_and_names_the_holder(vsphere_lab_factory, tmp_path):
    import datetime

    lab = vsphere_lab_factory(Topology(hosts=2, apply_now=False, power_on=False,
                                       reboot_delay_ms=100))
    si = connect(lab)
    later = (si.CurrentTime() + datetime.timedelta(hours=1)).isoformat()
    _plant_lock(si, later)
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "lock_timeout": 3}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc != 0 and "other-controller pid 1" in res["msg"], out
    assert "another rolling reboot" in res["msg"], res["msg"]
    assert all(not h.runtime.inMaintenanceMode for h in hosts(si).values())
    assert len(_lock_fields(si)) == 1  # not ours to remove


def test_expired_lock_is_taken_over(vsphere_lab_factory, tmp_path):
    import datetime

    lab = vsphere_lab_factory(Topology(hosts=2, apply_now=False, power_on=False,
                                       reboot_delay_ms=100))
    si = connect(lab)
    past = (si.CurrentTime() - datetime.timedelta(minutes=1)).isoformat()
    _plant_lock(si, past, holder="dead-controller pid 2 run y")
    args = {"clusters": ["gpu-cluster"], "reboot": "if_needed", "lock_timeout": 30}
    rc, res, out = run_module(lab, tmp_path, "esxi_gpu_passthrough", args)
    assert rc == 0 and sorted(res["rebooted"]) == ["esxi-0", "esxi-1"], out
    assert _lock_fields(si) == []
