"""ocp_gpu_nodes against the lab API server, read back with the plain kubernetes client."""

from __future__ import annotations

import pytest
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site

from .k8s_helpers import node_labels, run_module

pytestmark = pytest.mark.lab

WORKERS = [{"vm": f"ocp-worker-{i}", "gpus": 2} for i in range(8)]
OURS = ("nvidia.com/gpu.present", "gpu-stack.llmops.io/gpu-node", "gpu-stack.llmops.io/vm",
        "gpu-stack.llmops.io/gpus-expected")


@pytest.fixture
def lab(k8s_lab_factory):
    # no operators installed: nodes carry no GPU resources yet
    return k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))


def test_label_then_no_change_then_stale_removed(lab, tmp_path):
    before = node_labels(lab)
    rc, check, out = run_module(lab, tmp_path, "ocp_gpu_nodes", {"workers": WORKERS},
                                extra=("--check", "--diff"))
    assert rc == 0, out
    assert check["changed"] and len(check["changed_nodes"]) == 8
    assert node_labels(lab) == before  # check mode: a dry run only

    rc, first, out = run_module(lab, tmp_path, "ocp_gpu_nodes",
                                {"workers": WORKERS, "labels": {"example.com/pool": "llm"}})
    assert rc == 0, out
    assert first["changed"] and sorted(first["changed_nodes"]) == sorted(
        w["vm"] for w in WORKERS)
    labels = node_labels(lab)
    for i in range(8):
        own = labels[f"ocp-worker-{i}"]
        assert own["nvidia.com/gpu.present"] == "true"
        assert own["gpu-stack.llmops.io/vm"] == f"ocp-worker-{i}"
        assert own["gpu-stack.llmops.io/gpus-expected"] == "2"
        assert own["example.com/pool"] == "llm"
    assert "nvidia.com/gpu.present" not in labels["ocp-master-0"]
    assert [n["allocatable_gpus"] for n in first["nodes"]] == [0] * 8

    rc, again, out = run_module(lab, tmp_path, "ocp_gpu_nodes",
                                {"workers": WORKERS, "labels": {"example.com/pool": "llm"}})
    assert rc == 0, out
    assert again["changed"] is False and again["changed_nodes"] == []

    # worker 7 lost its GPUs: our labels go, the others' labels stay
    rc, fewer, out = run_module(lab, tmp_path, "ocp_gpu_nodes",
                                {"vms": [f"ocp-worker-{i}" for i in range(7)], "gpus_per_vm": 2,
                                 "labels": {"example.com/pool": "llm"}})
    assert rc == 0, out
    assert fewer["changed_nodes"] == ["ocp-worker-7"]
    after = node_labels(lab)
    assert not any(k in after["ocp-worker-7"] for k in (*OURS, "example.com/pool"))
    assert after["ocp-worker-7"]["kubernetes.io/hostname"] == "ocp-worker-7"
    assert after["ocp-worker-6"]["nvidia.com/gpu.present"] == "true"


@pytest.mark.parametrize(("args", "message"), [
    ({"workers": [{"vm": "ocp-worker-0", "gpus": 2}, {"vm": "no-such-vm", "gpus": 2}]},
     "no OpenShift node for these worker VMs (VM -> node): no-such-vm -> no-such-vm"),
    ({"workers": [{"vm": "ocp-worker-0", "gpus": 2}],
      "node_map": {"ocp-worker-0": "worker-0.example.com"}},
     "ocp-worker-0 -> worker-0.example.com"),
    ({"workers": [{"vm": "ocp-worker-0", "gpus": 0}]}, "'gpus' must be a whole number >= 1"),
    ({"workers": [{"vm": "ocp-worker-0", "gpus": 2}], "node_map": {"ocp-worker-9": "x"}},
     "node_map names VMs that are not workers: ocp-worker-9"),
])
def test_bad_input_fails_before_any_write(lab, tmp_path, args, message):
    before = node_labels(lab)
    rc, result, out = run_module(lab, tmp_path, "ocp_gpu_nodes", args)
    assert rc != 0, out
    assert message in result["msg"], result
    assert node_labels(lab) == before


def test_malformed_kubeconfig_is_a_clear_error(lab, tmp_path):
    bad = tmp_path / "kubeconfig"
    bad.write_text("apiVersion: v1\nclusters: [this is not: a kubeconfig\n")
    rc, result, out = run_module(lab, tmp_path, "ocp_gpu_nodes",
                                 {"workers": WORKERS, "kubeconfig": str(bad)})
    assert rc != 0, out
    assert result["msg"].startswith("cannot load the Kubernetes credentials"), result


def test_wait_for_allocatable_names_the_nodes_short(lab, tmp_path):
    rc, result, out = run_module(lab, tmp_path, "ocp_gpu_nodes",
                                 {"workers": WORKERS[:3], "wait_for": "allocatable",
                                  "wait_timeout": 3})
    assert rc != 0, out
    assert "timed out after" in result["msg"]
    assert "0 of 3 GPU nodes allocatable" in result["msg"]
    assert "ocp-worker-0 (0/2 nvidia.com/gpu)" in result["msg"]


def test_taints_applied_once(lab, tmp_path):
    from kubernetes import client

    from .k8s_helpers import api

    args = {"vms": ["ocp-worker-0", "ocp-worker-1"], "gpus_per_vm": 2,
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}
    rc, first, out = run_module(lab, tmp_path, "ocp_gpu_nodes", args)
    assert rc == 0 and first["changed"], out
    rc, again, out = run_module(lab, tmp_path, "ocp_gpu_nodes", args)
    assert rc == 0 and again["changed"] is False, out
    core = client.CoreV1Api(api(lab))
    taints = {n: [(t.key, t.value, t.effect) for t in core.read_node(n).spec.taints or []]
              for n in ("ocp-worker-0", "ocp-worker-2", "ocp-master-0")}
    assert taints["ocp-worker-0"] == [("nvidia.com/gpu", "present", "NoSchedule")]
    assert taints["ocp-worker-2"] == []
    assert taints["ocp-master-0"] == [("node-role.kubernetes.io/master", None, "NoSchedule")]
