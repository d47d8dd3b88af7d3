from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import GpuFilter
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.host_passthrough import (
    Request,
    plan,
)

from .vsphere_fakes import host, inventory


def test_plans_only_what_differs():
    inv = inventory(host("a", enabled=(True, True), active=(True, True)), host("b"))
    plans = plan(inv, Request(), None)
    assert {p.name: p.changes for p in plans} == {"a": [], "b": ["0000:17:00.0", "0000:31:00.0"]}
    assert [p.pending_after for p in plans] == [False, False]


def test_reboot_predicted_without_rebind_support_or_apply_now():
    inv = inventory(host("a", rebind=False))
    assert plan(inv, Request(), None)[0].pending_after is True
    inv = inventory(host("a"))
    assert plan(inv, Request(apply_now=False), None)[0].pending_after is True


def test_already_pending_change_counts_as_reboot_needed():
    inv = inventory(host("a", enabled=(True, True), active=(False, False)))
    p = plan(inv, Request(), None)[0]
    assert p.changes == [] and p.pending_after is True


def test_disable_refuses_gpu_in_use():
    inv = inventory(host("a", enabled=(True, True), active=(True, True),
                         bound={"0000:17:00.0": "vm-1"}))
    with pytest.raises(ConflictError, match="in use by VM vm-1"):
        plan(inv, Request(enabled=False), None)


def test_problems_of_all_hosts_reported_together():
    inv = inventory(host("a", state="notResponding"), host("b", device_id=0x2331))
    with pytest.raises(ConflictError) as err:
        plan(inv, Request(gpu_filter=GpuFilter.build(["a100-80g"])), None)
    assert "a: host is notResponding" in err.value.msg
    assert "b: no GPU with model in ['a100-80g']" in err.value.msg


@pytest.mark.parametrize(("request_", "error"), [
    (Request(reboot="always"), InvalidInputError),
    (Request(batch_size=0), InvalidInputError),
    (Request(hosts=["zzz"]), NotFoundError),
])
def test_bad_requests(request_, error):
    with pytest.raises(error):
        plan(inventory(host("a")), request_, None)
