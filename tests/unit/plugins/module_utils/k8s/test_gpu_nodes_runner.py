"""gpu_nodes_runner.run on an in-memory cluster: label, unlabel, check mode, wait, bad input."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import gpu_nodes_runner
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gpu_nodes import (
    GPU_PRESENT,
    OUR_GPU_NODE,
    OUR_VM,
)

from .fake_client import FakeClient, FakeClock


@pytest.fixture
def cluster():
    fake = FakeClient()
    for name, gpus in (("w0", "2"), ("w1", "0"), ("w2", "2")):
        fake.put({"kind": "Node", "metadata": {"name": name, "labels": {"zone": "a"}},
                  "status": {"allocatable": {"nvidia.com/gpu": gpus}}})
    return fake


def _request(vms=("w0", "w1"), clock=None, **kwargs):
    return gpu_nodes_runner.Request(workers=[{"vm": vm, "gpus": 2} for vm in vms],
                                    wait_options=(clock or FakeClock()).options(), **kwargs)


def _labels(cluster, name):
    return cluster.render(("Node", None, name))["metadata"]["labels"]


def test_labels_the_gpu_nodes_then_a_rerun_changes_nothing(cluster):
    result = gpu_nodes_runner.run(cluster, _request(labels={"pool": "gpu"}))
    assert result["changed"] and result["changed_nodes"] == ["w0", "w1"]
    assert _labels(cluster, "w0") == {"zone": "a", GPU_PRESENT: "true", OUR_GPU_NODE: "true",
                                      OUR_VM: "w0", "gpu-stack.llmops.io/gpus-expected": "2",
                                      "pool": "gpu"}
    assert OUR_GPU_NODE not in _labels(cluster, "w2")
    assert result["diff"]["after"]["w0"]["metadata"]["labels"]["pool"] == "gpu"
    again = gpu_nodes_runner.run(cluster, _request(labels={"pool": "gpu"}))
    assert not again["changed"] and again["changed_nodes"] == []


def test_a_node_that_left_the_workers_loses_only_our_labels(cluster):
    gpu_nodes_runner.run(cluster, _request())
    result = gpu_nodes_runner.run(cluster, _request(vms=("w0",)))
    assert result["changed_nodes"] == ["w1"]
    assert _labels(cluster, "w1") == {"zone": "a"}


def test_check_mode_writes_nothing_and_shows_the_labels(cluster):
    before = cluster.snapshot()
    result = gpu_nodes_runner.run(cluster, _request(check_mode=True, wait_for="allocatable"))
    assert cluster.snapshot() == before and cluster.writes == []
    assert result["changed_nodes"] == ["w0", "w1"] and result["wait"].startswith("check mode")
    assert OUR_VM not in result["diff"]["before"]["w1"]["metadata"]["labels"]
    assert result["diff"]["after"]["w1"]["metadata"]["labels"][OUR_VM] == "w1"


def test_the_wait_names_the_node_without_its_gpus(cluster):
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as err:
        gpu_nodes_runner.run(cluster, _request(wait_for="allocatable", wait_timeout=30,
                                               clock=clock))
    assert "1 of 2 GPU nodes allocatable; missing: w1 (0/2 nvidia.com/gpu)" in err.value.msg
    assert clock.now >= 30
    cluster.put({"kind": "Node", "metadata": {"name": "w1"},
                 "status": {"allocatable": {"nvidia.com/gpu": "2"}}})
    result = gpu_nodes_runner.run(cluster, _request(wait_for="allocatable", label=False))
    assert result["wait"] == "2 of 2 GPU nodes allocatable"
    assert [n["allocatable_gpus"] for n in result["nodes"]] == [2, 2]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vms": ("w0", "w9")}, r"no OpenShift node for these worker VMs \(VM -> node\): w9 -> w9"),
    ({"taints": [{"key": "gpu"}]}, r"taints\[0\] \(gpu\): 'effect' must be one of"),
    ({"taints": [{"effect": "NoSchedule"}]}, r"taints\[0\]: 'key' is required"),
    ({"wait_for": "ready"}, "wait_for must be one of none, allocatable"),
    ({"node_map": {"w7": "w0"}}, "node_map names VMs that are not workers: w7"),
])
def test_bad_input_is_refused_before_the_first_write(cluster, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        gpu_nodes_runner.run(cluster, _request(**kwargs))
    assert cluster.writes == []
