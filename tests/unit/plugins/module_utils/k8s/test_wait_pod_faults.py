"""The serving and operator-install waits end early, through pods.py, when a pod cannot
start; the install wait reports the CSV's phase and why at a steady pace.

The in-memory cluster's kubelet leaves one worker in ImagePullBackOff (or the head
unschedulable); the grace periods are set to zero so the first check decides (their
timing is tested in test_pods.py)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import olm, pods, serving
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.olm import OperatorSpec
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import run

from . import test_serving_runner as base
from .fake_client import FakeClient, FakeClock


@pytest.fixture(autouse=True)
def _no_grace(monkeypatch):
    zero = {r: 0.0 for r in (*pods.STUCK_REASONS, pods.UNSCHEDULABLE)}
    monkeypatch.setattr(serving, "PodFaults", lambda: pods.PodFaults(grace=zero))


def _broken_kubelet(change):
    def _kubelet(fake, cluster):
        base._kubelet(fake, cluster)
        name = cluster["metadata"]["name"]
        pod = fake.find("Pod", f"{name}-worker-1", cluster["metadata"]["namespace"])
        change(pod)
        fake.put(pod, replace=True)
    return _kubelet


def _pull_backoff(pod):
    pod["spec"].pop("nodeName")
    pod["status"] = {"phase": "Pending", "conditions": [], "containerStatuses": [
        {"name": "ray-worker", "state": {"waiting": {
            "reason": "ImagePullBackOff",
            "message": 'Back-off pulling image "registry.invalid/ray-vllm:0"'}}}]}


def _unschedulable(pod):
    pod["spec"].pop("nodeName")
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}


@pytest.mark.parametrize(("change", "expected"), [
    (_pull_backoff, 'ImagePullBackOff (container ray-worker): Back-off pulling image '
                    '"registry.invalid/ray-vllm:0"'),
    (_unschedulable, "Unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."),
])
def test_the_serving_wait_ends_with_the_pods_reason(change, expected):
    fake = base._cluster()
    fake.on_apply["RayCluster"] = _broken_kubelet(change)
    out: dict = {}
    with pytest.raises(OperationFailedError) as err:
        run(fake, base._request(wait_timeout=3600), out=out)
    assert err.value.msg == (f"the serving stack {base.NS}/llm: pod {base.NS}/llm-0-worker-1 "
                             f"cannot become ready: {expected}")
    assert err.value.details["pod"] == "llm-0-worker-1"
    # ended on the first look, not after the hour
    assert [c for c in fake.calls if c[:2] == ("list", "Pod")][1:] == []


def test_a_stack_that_comes_up_is_not_stopped():
    fake = base._cluster()
    result = run(fake, base._request(wait_timeout=60))
    assert result["endpoint"] == f"https://{base.HOST}"


# --- the operator install wait (olm.py) ------------------------------------------------

def _installing_csv_and_pod(waiting):
    cluster = FakeClient()
    cluster.put({"kind": "ClusterServiceVersion",
                 "metadata": {"name": "op.v1", "namespace": "ops"},
                 "spec": {"install": {"spec": {"deployments": [
                     {"name": "op-controller", "spec": {"selector": {"matchLabels": {
                         "app": "op-controller"}}}}]}}},
                 "status": {"phase": "Installing", "reason": "InstallWaiting",
                            "message": "installing: waiting for deployment op-controller to "
                                       "become ready"}})
    for name, labels in (("op-controller-x1", {"app": "op-controller"}),
                         ("unrelated", {"app": "someone-else"})):
        cluster.put({"kind": "Pod", "metadata": {"name": name, "namespace": "ops",
                                                 "uid": name, "labels": labels},
                     "status": {"phase": "Pending", "containerStatuses": [
                         {"name": "manager", "state": {"waiting": waiting}}]}})
    return cluster


def _spec():
    return OperatorSpec(package="op", namespace="ops", catalog="c", starting_csv="op.v1")


def test_an_operator_pod_that_cannot_start_ends_the_install_wait(monkeypatch):
    monkeypatch.setattr(olm, "PodFaults", lambda: pods.PodFaults(grace={
        "CreateContainerConfigError": 0.0}))
    cluster = _installing_csv_and_pod({"reason": "CreateContainerConfigError",
                                       "message": 'secret "op-webhook-cert" not found'})
    with pytest.raises(OperationFailedError) as err:
        olm.OlmOperator(cluster).wait_installed(_spec(), "op.v1", timeout=600)
    assert err.value.msg == (
        "operator op: pod ops/op-controller-x1 cannot become ready: CreateContainerConfigError"
        ' (container manager): secret "op-webhook-cert" not found')


def test_the_install_progress_names_the_csv_phase_and_why(monkeypatch):
    # the unrelated pod is stuck too: only the CSV's own deployments' pods count
    cluster = _installing_csv_and_pod({"reason": "ContainerCreating"})
    cluster.put({"kind": "Pod", "metadata": {"name": "unrelated", "namespace": "ops"},
                 "status": {"containerStatuses": [{"name": "c", "state": {"waiting": {
                     "reason": "ImagePullBackOff"}}}]}})
    monkeypatch.setattr(olm, "PodFaults", lambda: pods.PodFaults(grace={
        "ImagePullBackOff": 0.0}))
    clock, reports = FakeClock(), []
    with pytest.raises(WaitTimeout):
        olm.OlmOperator(cluster).wait_installed(
            _spec(), "op.v1", timeout=100, progress=lambda s, e: reports.append(s.progress),
            progress_every=30.0, **clock.options())
    assert len(reports) == 3  # at 30, 60 and 90 s: a steady pace, not every poll
    assert reports[0] == ("CSV op.v1: Installing (InstallWaiting: installing: waiting for "
                          "deployment op-controller to become ready)")
