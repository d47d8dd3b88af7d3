from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import finders, tasks
from pyVmomi import vim, vmodl


class _Prop:
    def __init__(self, name, val):
        self.name, self.val = name, val


class _Obj:
    def __init__(self, obj, **props):
        self.obj = obj
        self.propSet = [_Prop(k.replace("__", "."), v) for k, v in props.items()]


class FakeClient:
    """Answers RetrievePropertiesEx from a canned list; counts round-trips."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.specs = []
        self.content = type("C", (), {"rootFolder": vim.Folder("group-d1")})()

    def retrieve(self, spec_set, what=""):
        self.specs.append(spec_set)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer() if callable(answer) else answer


def _fleet():
    dc, hf = vim.Datacenter("dc-1"), vim.Folder("group-h2")
    cl = vim.ClusterComputeResource("c-1")
    return [
        _Obj(vim.Folder("group-d1"), parent=None),
        _Obj(dc, name="gpu-dc"),
        _Obj(hf, parent=dc),
        _Obj(cl, name="gpu-cluster", parent=hf),
        _Obj(vim.HostSystem("host-1"), name="esxi-0", parent=cl),
        _Obj(vim.HostSystem("host-2"), name="esxi-1", parent=cl),
        _Obj(vim.VirtualMachine("vm-1"), name="ocp-worker-0"),
    ]


def test_inventory_is_one_round_trip_with_only_requested_properties():
    client = FakeClient([_fleet()])
    inv = finders.load_inventory(client, host_props=("runtime.connectionState",),
                                 vm_props=("runtime.host",))
    assert len(client.specs) == 1
    spec = client.specs[0][0]
    props = {p.type: set(p.pathSet) for p in spec.propSet}
    assert props[vim.HostSystem] == {"name", "parent", "runtime.connectionState"}
    assert props[vim.VirtualMachine] == {"name", "runtime.host"}
    assert not any(p.all for p in spec.propSet)
    traversals = {s.name: (s.type, s.path) for s in spec.objectSet[0].selectSet}
    assert traversals["dc_hosts"] == (vim.Datacenter, "hostFolder")
    assert traversals["cr_hosts"] == (vim.ComputeResource, "host")
    assert [h.name for h in inv.hosts] == ["esxi-0", "esxi-1"]
    assert inv.host_cluster == {"esxi-0": "gpu-cluster", "esxi-1": "gpu-cluster"}
    assert inv.host_dc == {"esxi-0": "gpu-dc", "esxi-1": "gpu-dc"}
    assert list(inv.vm_by_name()) == ["ocp-worker-0"]


def test_inventory_without_vms_does_not_traverse_vm_folders():
    client = FakeClient([_fleet()])
    finders.load_inventory(client, host_props=())
    names = {s.name for s in client.specs[0][0].objectSet[0].selectSet}
    assert "dc_vms" not in names


def _task_answers(states):
    """One answer per poll: task states for tasks task-1, task-2."""
    answers = []
    for poll in states:
        objs = []
        for i, state in enumerate(poll, start=1):
            error = None
            if state == "error":
                error = vim.fault.NoDiskSpace(msg="disk full", datastore="ds")
            objs.append(_Obj(vim.Task(f"task-{i}"), info__state=state, info__error=error,
                             info__result=f"r{i}"))
        answers.append(objs)
    return answers


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_task_monitor_polls_all_tasks_in_one_read():
    client = FakeClient(_task_answers([("running", "running"), ("success", "running"),
                                       ("success", "success")]))
    clock = FakeClock()
    result = tasks.wait_for_tasks(client, {"a": vim.Task("task-1"), "b": vim.Task("task-2")},
                                  what="x", timeout=10, clock=clock, sleep=clock.sleep)
    assert result == {"a": "r1", "b": "r2"}
    assert len(client.specs) == 3  # one read per poll, whatever the number of tasks
    assert clock.now < 1.0  # capped backoff starting at 50 ms


def test_task_monitor_names_the_failed_task():
    client = FakeClient(_task_answers([("success", "error")]))
    clock = FakeClock()
    with pytest.raises(OperationFailedError) as err:
        tasks.wait_for_tasks(client, {"esxi-0": vim.Task("task-1"), "esxi-3": vim.Task("task-2")},
                             what="host reboot", clock=clock, sleep=clock.sleep)
    assert err.value.msg == "host reboot failed on esxi-3: NoDiskSpace: disk full"
    assert err.value.details["succeeded"] == ["esxi-0"]


def test_task_monitor_times_out_listing_pending_tasks():
    client = FakeClient(_task_answers([("success", "running")]))
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        tasks.wait_for_tasks(client, {"esxi-0": vim.Task("task-1"), "esxi-3": vim.Task("task-2")},
                             what="host reboot", timeout=5, clock=clock, sleep=clock.sleep)
    assert "missing: esxi-3" in err.value.msg and clock.now == pytest.approx(5, abs=0.01)
    assert err.value.missing == ["esxi-3"]


def test_error_text_of_a_raw_localized_fault():
    raw = vmodl.LocalizedMethodFault(fault=vim.fault.Timedout(), localizedMessage="too slow")
    assert tasks._error_text(raw) == "Timedout: too slow"
    assert tasks._error_text(None) == "unknown error"
