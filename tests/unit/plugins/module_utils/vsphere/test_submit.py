"""submit_task: a task is submitted again only when vCenter recorded none."""

from __future__ import annotations

import datetime
import http.client

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import Backoff
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import submit
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import Record
from pyVmomi import VmomiSupport, vim

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0)


class _Si:
    def CurrentTime(self):
        return T0


class _Entity:
    """A VM whose ReconfigVM_Task loses its response ``lose`` times."""

    def __init__(self, lose: int, recorded: list):
        self.lose, self.calls, self.recorded = lose, 0, recorded
        self._moId = "vm-7"

    def ReconfigVM_Task(self, spec=None):
        self.calls += 1
        task = vim.Task(f"task-{self.calls}")
        self.recorded.append(task)
        if self.calls <= self.lose:
            raise http.client.RemoteDisconnected("Remote end closed connection")
        return task


def _client():
    client = VsphereClient(ConnectionParams("vc", "u", "p"), connect=lambda **kw: None,
                           backoff=Backoff(tries=3, delay=0, jitter=False))
    client._si = _Si()
    client._content = type("C", (), {"taskManager": type("M", (), {"recentTask": []})()})()
    return client


def _task_record(ref, entity_id, name, queued):
    return Record(obj=ref, props={"info.entity": vim.VirtualMachine(entity_id),
                                  "info.name": name, "info.queueTime": queued,
                                  "info.descriptionId": ""})


def test_lost_response_adopts_the_accepted_task(monkeypatch):
    recorded: list = []
    entity = _Entity(lose=1, recorded=recorded)

    def _records(client, typ, refs, props):
        return [_task_record(t, "vm-7", VmomiSupport.UnknownManagedMethod("ReconfigVm"), T0)
                for t in recorded]

    monkeypatch.setattr(submit, "load_objects", _records)
    task = submit.submit_task(_client(), entity, "ReconfigVM_Task", what="reconf",
                              sleep=lambda s: None, spec=None)
    assert entity.calls == 1 and task._moId == "task-1"


@pytest.mark.parametrize("other", [
    ("vm-8", "ReconfigVm", T0),  # another VM
    ("vm-7", "PowerOn", T0),  # another method
    ("vm-7", "ReconfigVm", T0 - datetime.timedelta(seconds=1)),  # before this submission
])
def test_no_recorded_task_means_submit_again(monkeypatch, other):
    recorded: list = []
    entity = _Entity(lose=1, recorded=[])
    ref = vim.Task("task-old")

    def _records(client, typ, refs, props):
        return [_task_record(ref, other[0], VmomiSupport.UnknownManagedMethod(other[1]),
                             other[2])]

    monkeypatch.setattr(submit, "load_objects", _records)
    task = submit.submit_task(_client(), entity, "ReconfigVM_Task", what="reconf",
                              sleep=recorded.append, spec=None)
    assert entity.calls == 2 and task._moId == "task-2" and recorded == [0]


def test_gives_up_after_the_backoff(monkeypatch):
    entity = _Entity(lose=5, recorded=[])
    monkeypatch.setattr(submit, "load_objects", lambda client, typ, refs, props: [])
    with pytest.raises(TransientError):
        submit.submit_task(_client(), entity, "ReconfigVM_Task", what="reconf",
                           sleep=lambda s: None, spec=None)
    assert entity.calls == 3


def test_real_and_simulated_task_names_match():
    wanted = submit.method_names(vim.HostSystem, "RebootHost_Task")
    real = Record(obj=None, props={"info.name": vim.HostSystem.RebootHost_Task,
                                   "info.descriptionId": "HostSystem.reboot"})
    sim = Record(obj=None, props={"info.name": VmomiSupport.UnknownManagedMethod("RebootHost"),
                                  "info.descriptionId": "HostSystem.rebootHost"})
    other = Record(obj=None, props={"info.name": vim.HostSystem.ExitMaintenanceMode_Task,
                                    "info.descriptionId": "HostSystem.exitMaintenanceMode"})
    assert submit.task_names(real) & wanted and submit.task_names(sim) & wanted
    assert not submit.task_names(other) & wanted
