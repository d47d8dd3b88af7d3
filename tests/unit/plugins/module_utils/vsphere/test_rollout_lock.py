"""RolloutLock against a fake CustomFieldsManager with vCenter's atomic create."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import WaitTimeout
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import Backoff
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import rollout_lock
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
)
from pyVmomi import vim

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


class _Cluster:
    def __init__(self, moid):
        self._moId = moid
        self.customValue = []


class _Fields:
    """AddCustomFieldDef refuses an existing name (DuplicateName), keys are never reused."""

    def __init__(self):
        self.field, self.next_key, self.values = [], 100, {}

    def AddCustomFieldDef(self, name, moType):
        if any(f.name == name for f in self.field):
            raise vim.fault.DuplicateName(name=name)
        self.next_key += 1
        created = vim.CustomFieldsManager.FieldDef(key=self.next_key, name=name)
        self.field.append(created)
        return created

    def SetField(self, entity, key, value):
        entity.customValue = [v for v in entity.customValue if v.key != key]
        entity.customValue.append(vim.CustomFieldsManager.StringValue(key=key, value=value))

    def RemoveCustomFieldDef(self, key):
        if not any(f.key == key for f in self.field):
            raise vim.fault.NotFound()
        self.field = [f for f in self.field if f.key != key]


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _client(fields):
    client = VsphereClient(ConnectionParams("vc", "u", "p"), connect=lambda **kw: None,
                           backoff=Backoff(tries=1, jitter=False))
    client._si = type("Si", (), {"CurrentTime": staticmethod(lambda: NOW)})()
    client._content = type("C", (), {"customFieldsManager": fields})()
    return client


def _lock(client, cluster, clock, **kw):
    return rollout_lock.RolloutLock(client, {"gpu-cluster": cluster}, lease=600, timeout=5,
                                    clock=clock, sleep=clock.sleep, **kw)


def test_second_holder_waits_and_is_told_who_holds():
    fields, cluster, clock = _Fields(), _Cluster("domain-c7"), _Clock()
    client = _client(fields)
    with _lock(client, cluster, clock) as first:
        holder, expires = rollout_lock.parse_value(cluster.customValue[-1].value)
        assert holder == first.holder and expires == NOW + datetime.timedelta(seconds=600)
        with pytest.raises(WaitTimeout, match=f"held by {first.holder}"):
            _lock(client, cluster, clock).__enter__()
    assert fields.field == []  # released
    with _lock(client, cluster, clock) as third:
        assert third.held


def test_expired_lease_is_removed_by_key_and_taken():
    fields, cluster, clock = _Fields(), _Cluster("domain-c7"), _Clock()
    client = _client(fields)
    stale = fields.AddCustomFieldDef(name=rollout_lock.PREFIX + "domain-c7", moType=None)
    past = (NOW - datetime.timedelta(seconds=1)).isoformat()
    fields.SetField(cluster, stale.key, f"holder=dead;expires={past}")
    with _lock(client, cluster, clock) as lock:
        assert lock.held["gpu-cluster"] != stale.key
        assert [f.key for f in fields.field] == [lock.held["gpu-cluster"]]


def test_unstamped_lock_gets_one_lease_of_grace():
    fields, cluster, clock = _Fields(), _Cluster("domain-c7"), _Clock()
    client = _client(fields)
    fields.AddCustomFieldDef(name=rollout_lock.PREFIX + "domain-c7", moType=None)
    short = rollout_lock.RolloutLock(client, {"gpu-cluster": cluster}, lease=600, timeout=60,
                                     clock=clock, sleep=clock.sleep)
    with pytest.raises(WaitTimeout, match="being taken"):
        short.__enter__()
    patient = rollout_lock.RolloutLock(client, {"gpu-cluster": cluster}, lease=30, timeout=120,
                                       clock=clock, sleep=clock.sleep)
    with patient:
        assert patient.held
