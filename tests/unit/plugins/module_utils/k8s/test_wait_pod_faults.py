"""The serving wait ends early, through pods.py, when a pod cannot start.

The in-memory cluster's kubelet leaves one worker in ImagePullBackOff (or the head
unschedulable); the grace periods are set to zero so the first check decides (their
timing is tested in test_pods.py)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import pods, serving
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import run

from . import test_serving_runner as base


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
        fake.put(pod)
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
    fake.controllers["RayCluster"] = _broken_kubelet(change)
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
