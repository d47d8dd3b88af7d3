"""vm_passthrough.run with a node drain, the vSphere side faked at its task seam and the
cluster played by the fake k8s client: the order is cordon, evictions, power off,
reconfigure, power on, node Ready (new boot), uncordon; a drain a disruption budget
blocks fails with the VM untouched; no k8s_auth with drain on is refused before any
write; check mode only plans."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.drain import (
    DrainRequest,
    NodeDrain,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere import (
    vm_passthrough,
    vm_power,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.finders import Record
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.gpu import host_gpus
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.vm_spec import VmState
from pyVmomi import vim

from ..k8s.fake_client import FakeClock
from ..k8s.test_drain import UUID, DrainFake, node, pod
from .vsphere_fakes import host


@pytest.fixture
def site(monkeypatch):
    """A powered-on GPU-less worker VM, its node with two pods, and one shared log."""
    log = []
    fake = DrainFake([node("ocp-worker-0", provider=f"vsphere://{UUID.lower()}"),
                      pod("web-1", "ocp-worker-0", owner="ReplicaSet"),
                      pod("dns", "ocp-worker-0", owner="DaemonSet")], log=log)
    rec = Record(obj=vim.VirtualMachine("vm-1"), props={
        "name": "ocp-worker-0", "runtime.powerState": "poweredOn", "config.uuid": UUID,
        "config.hardware.device": [], "config.hardware.memoryMB": 65536,
        "config.memoryReservationLockedToMax": True, "config.extraConfig": [],
        "config.firmware": "efi", "config.version": "vmx-19", "config.cpuHotAddEnabled": False})
    h = host("esxi-0", enabled=(True, True), active=(True, True))
    ctx = vm_passthrough._Context(vm=VmState.from_record(rec), host=h, gpus=host_gpus(h),
                                  used_by_others={})
    boots = iter(f"boot-{i}" for i in range(2, 10))

    def _submit(client, obj, method, what, **kwargs):
        log.append((method, obj._moId))
        if method == "PowerOnVM_Task":  # the kubelet comes back with a new boot
            fake.put(node("ocp-worker-0", boot=next(boots)))
        return method

    monkeypatch.setattr(vm_passthrough, "_load", lambda client, req: ctx)
    monkeypatch.setattr(vm_passthrough, "_config_spec", lambda *a: "spec")
    for module in (vm_passthrough, vm_power):
        monkeypatch.setattr(module, "submit_task", _submit)
        monkeypatch.setattr(module, "wait_for_task", lambda *a, **kw: None)
    return fake, log


def _request(fake, **kw):
    clock = FakeClock()
    drain = NodeDrain(lambda: fake, DrainRequest(interval=1.0, drain_timeout=20),
                      clock=clock, sleep=clock.sleep)
    return vm_passthrough.VmRequest(vm="ocp-worker-0", gpu_count=1, allow_power_cycle=True,
                                    node=drain, **kw)


def test_cordon_drain_power_cycle_ready_uncordon_in_order(site):
    fake, log = site
    result = vm_passthrough.run(None, _request(fake))
    assert log == [("cordon", "ocp-worker-0"), ("evict", "apps/web-1"),
                   ("PowerOffVM_Task", "vm-1"), ("ReconfigVM_Task", "vm-1"),
                   ("PowerOnVM_Task", "vm-1"), ("uncordon", "ocp-worker-0")]
    assert result["node"] == {"node": "ocp-worker-0", "cordoned_before": False,
                              "evict": ["apps/web-1"], "kept": ["apps/dns (DaemonSet)"]}
    assert fake.find("Node", "ocp-worker-0")["spec"]["unschedulable"] is False


def test_blocked_drain_leaves_the_vm_untouched_and_the_node_cordoned(site):
    fake, log = site
    fake.blocked.add("apps/web-1")
    with pytest.raises(OperationFailedError, match="left cordoned and its VM was not touched"):
        vm_passthrough.run(None, _request(fake))
    assert log == [("cordon", "ocp-worker-0")]  # no vSphere task at all
    assert fake.find("Node", "ocp-worker-0")["spec"]["unschedulable"] is True


def test_failed_reconfigure_powers_on_and_uncordons_once_ready(site, monkeypatch):
    fake, log = site
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
        OperationFailedError as Failed,
    )

    def _refuse(client, name, task, what, timeout):
        if task == "ReconfigVM_Task":
            raise Failed("reconfigure refused", reason="x")

    for module in (vm_passthrough, vm_power):
        monkeypatch.setattr(module, "wait_for_task", _refuse)
    with pytest.raises(OperationFailedError, match="reconfigure refused; nothing was changed"):
        vm_passthrough.run(None, _request(fake))
    assert [e[0] for e in log] == ["cordon", "evict", "PowerOffVM_Task", "ReconfigVM_Task",
                                   "PowerOnVM_Task", "uncordon"]


def test_check_mode_plans_the_drain_and_writes_nothing(site):
    fake, log = site
    result = vm_passthrough.run(None, _request(fake, check_mode=True))
    assert result["changed"] is True and result["node"]["evict"] == ["apps/web-1"]
    assert log == [] and fake.writes == []


def test_drain_without_cluster_access_is_refused_before_any_write(site):
    _fake, log = site
    req = vm_passthrough.VmRequest(vm="ocp-worker-0", gpu_count=1, allow_power_cycle=True)
    with pytest.raises(InvalidInputError, match=r"give k8s_auth.*or set drain: false"):
        vm_passthrough.run(None, req)
    assert log == []
    result = vm_passthrough.run(None, vm_passthrough.VmRequest(
        vm="ocp-worker-0", gpu_count=1, allow_power_cycle=True, drain=False))
    assert result["node"] is None
    assert [e[0] for e in log] == ["PowerOffVM_Task", "ReconfigVM_Task", "PowerOnVM_Task"]
