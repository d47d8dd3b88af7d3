"""NodeDrain with the fake client: node lookup, cordon, evictions (DaemonSet and mirror
pods kept, a disruption budget retried with progress until the drain timeout), Ready with
a new boot, uncordon; an operator's cordon is kept."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.drain import (
    DrainRequest,
    NodeDrain,
    node_drain,
)

from .fake_client import FakeClient, FakeClock

UUID = "4237A4C3-0000-4000-8000-00000000AB01"
PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


class DrainFake(FakeClient):
    """FakeClient plus the Eviction API; ``blocked`` pods are refused with a 429."""

    def __init__(self, objects=(), blocked=(), log=None):
        self.log = [] if log is None else log
        super().__init__(objects, on_apply={"Node": self._node_applied})
        self.blocked = set(blocked)

    def _node_applied(self, fake, node):
        self.log.append(("cordon" if node["spec"]["unschedulable"] else "uncordon",
                         node["metadata"]["name"]))

    def evict(self, name, namespace, *, grace_period=None):
        self.calls.append(("evict", namespace, name))
        if f"{namespace}/{name}" in self.blocked:
            return PDB_MESSAGE
        self.log.append(("evict", f"{namespace}/{name}"))
        self.objects.pop(self.key("Pod", name, namespace), None)
        return ""

    def node(self, name):
        return self.find("Node", name)


def node(name, *, provider=None, cordoned=False, ready=True, boot="boot-1"):
    spec = {}
    if provider:
        spec["providerID"] = provider
    if cordoned:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"bootID": boot}}}


def pod(name, node_name, namespace="apps", owner=None, mirror=False):
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "apiVersion": "apps/v1",
                                    "uid": "o"}]
    if mirror:
        meta["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node_name}}


def _drain(fake, clock=None, **kw):
    clock = clock or FakeClock()
    lines = []
    request = DrainRequest(interval=1.0, progress_every=10.0, **kw)
    return NodeDrain(lambda: fake, request, progress=lines.append, clock=clock,
                     sleep=clock.sleep), lines


def _site():
    return [node("worker-a", provider=f"vsphere://{UUID.lower()}"), node("ocp-worker-0"),
            pod("web-1", "worker-a", owner="ReplicaSet"), pod("web-2", "worker-a"),
            pod("dns", "worker-a", namespace="openshift-dns", owner="DaemonSet"),
            pod("etcd-static", "worker-a", namespace="kube-system", mirror=True),
            pod("elsewhere", "ocp-worker-0")]


def test_provider_id_finds_the_node_and_the_plan_writes_nothing():
    fake = DrainFake(_site())
    drain, _lines = _drain(fake)
    plan = drain.prepare("ocp-worker-0", UUID)  # the name would match another node
    assert plan == {"node": "worker-a", "cordoned_before": False,
                    "evict": ["apps/web-1", "apps/web-2"],
                    "kept": ["kube-system/etcd-static (mirror pod)",
                             "openshift-dns/dns (DaemonSet)"]}
    assert fake.writes == [] and fake.log == []


def test_name_fallback_and_lookup_choices():
    fake = DrainFake([node("ocp-worker-0")])
    assert _drain(fake)[0].prepare("ocp-worker-0", UUID)["node"] == "ocp-worker-0"
    with pytest.raises(NotFoundError, match="providerID vsphere://4237a4c3"):
        _drain(fake, node_lookup="provider_id")[0].prepare("ocp-worker-0", UUID)
    with pytest.raises(NotFoundError, match="drain: false"):
        _drain(fake)[0].prepare("ocp-worker-9", UUID)
    assert _drain(fake, node_name="ocp-worker-0")[0].prepare("vm-x", None)["node"] == \
        "ocp-worker-0"
    with pytest.raises(InvalidInputError, match="node_lookup"):
        _drain(fake, node_lookup="label")


def test_a_name_match_of_another_vm_is_refused():
    fake = DrainFake([node("ocp-worker-0", provider="vsphere://0000-other")])
    with pytest.raises(ConflictError, match="belongs to another VM"):
        _drain(fake)[0].prepare("ocp-worker-0", UUID)


def test_drain_cordons_before_evicting_and_restore_waits_for_a_new_boot():
    fake = DrainFake(_site())
    clock = FakeClock()
    drain, lines = _drain(fake, clock)
    drain.prepare("ocp-worker-0", UUID)
    drain.drain()
    assert fake.log == [("cordon", "worker-a"), ("evict", "apps/web-1"), ("evict", "apps/web-2")]
    assert fake.node("worker-a")["spec"]["unschedulable"] is True
    left = {k[2] for k in fake.objects if k[0] == "Pod"}
    assert left == {"dns", "etcd-static", "elsewhere"}

    # the VM is back but the kubelet has not reported the new boot yet: no uncordon
    with pytest.raises(WaitTimeout, match="still the boot before the power-off"):
        drain.request.ready_timeout = 5
        drain.restore()
    assert fake.node("worker-a")["spec"]["unschedulable"] is True
    fake.put(node("worker-a", boot="boot-2"))
    drain.restore()
    assert fake.log[-1] == ("uncordon", "worker-a")
    assert fake.node("worker-a")["spec"]["unschedulable"] is False
    assert lines[0] == "node worker-a cordoned; evicting 2 pod(s)"
    assert lines[-1] == "node worker-a Ready and uncordoned"


def test_disruption_budget_retried_with_progress_then_fails_leaving_the_node_cordoned():
    fake = DrainFake(_site(), blocked={"apps/web-2"})
    clock = FakeClock()
    drain, lines = _drain(fake, clock, drain_timeout=30)
    drain.prepare("ocp-worker-0", UUID)
    with pytest.raises(OperationFailedError) as err:
        drain.drain()
    assert "apps/web-2: " + PDB_MESSAGE in err.value.msg
    assert "left cordoned and its VM was not touched" in err.value.msg
    assert err.value.details["blocked"] == ["apps/web-2"]
    assert fake.node("worker-a")["spec"]["unschedulable"] is True
    tries = [c for c in fake.calls if c == ("evict", "apps", "web-2")]
    assert len(tries) >= 25  # retried every second until the timeout
    progress = [line for line in lines if "drain of worker-a" in line]
    assert 2 <= len(progress) <= 4  # steady pace: every 10 s of the 30 s, not every poll
    assert "blocked by a disruption budget: apps/web-2" in progress[0]
    assert clock.now >= 30


def test_budget_that_frees_up_lets_the_drain_finish():
    fake = DrainFake(_site(), blocked={"apps/web-2"})
    clock = FakeClock()
    drain, _lines = _drain(fake, clock, drain_timeout=60)
    drain.prepare("ocp-worker-0", UUID)
    fake.controllers.append(lambda f: f.blocked.clear() if clock.now >= 5 else None)
    drain.drain()
    assert ("evict", "apps/web-2") in fake.log and clock.now < 60


def test_an_operators_cordon_is_kept():
    fake = DrainFake([node("ocp-worker-0", cordoned=True), pod("a", "ocp-worker-0")])
    drain, lines = _drain(fake)
    assert drain.prepare("ocp-worker-0", None)["cordoned_before"] is True
    drain.drain()
    fake.put(node("ocp-worker-0", boot="boot-2", cordoned=True))
    drain.restore()
    assert fake.log == [("evict", "apps/a")]  # neither cordoned nor uncordoned by us
    assert fake.node("ocp-worker-0")["spec"]["unschedulable"] is True
    assert "left cordoned" in lines[-1]


def test_our_cordon_from_a_failed_drain_is_lifted_by_the_rerun():
    fake = DrainFake(_site(), blocked={"apps/web-2"})
    drain, _lines = _drain(fake, drain_timeout=5)
    drain.prepare("ocp-worker-0", UUID)
    with pytest.raises(OperationFailedError):
        drain.drain()
    marked = fake.node("worker-a")["metadata"]["annotations"]
    assert marked == {"llmops.gpu_stack/cordoned-for": "power cycle of VM ocp-worker-0"}
    fake.blocked.clear()
    again, _lines = _drain(fake)
    assert again.prepare("ocp-worker-0", UUID)["cordoned_before"] is False
    again.drain()
    fake.put(node("worker-a", boot="boot-2"))
    again.restore()
    after = fake.node("worker-a")
    assert after["spec"]["unschedulable"] is False
    assert "llmops.gpu_stack/cordoned-for" not in (after["metadata"].get("annotations") or {})


def test_node_drain_without_auth_is_none_and_unknown_keys_are_refused():
    assert node_drain(None, DrainRequest()) is None
    with pytest.raises(InvalidInputError, match=r"unknown option.*kubeconf"):
        node_drain({"kubeconf": "/x"}, DrainRequest())
    assert node_drain({"verify_ssl": False}, DrainRequest()) is not None
