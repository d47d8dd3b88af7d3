"""Rendering the serving objects from real plans."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import (
    handover,
    handover_name,
    manifests,
)

SITE = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40, "nvlink": False, "rdma": False}
CFG = {"name": "llm", "namespace": "serving", "image": "registry.example.com/llmops/ray-vllm:0.1.0",
       "served_model_name": "llama-3-70b", "model_dir": "llama-3-70b", "pvc": "models",
       "api_key_secret": "llm-api-key", "service_account": "ray-vllm", "ray_version": "2.60.0",
       "shm_size": "16Gi", "startup_checks": 180, "route_timeout": "600s",
       "node_selector": {"nvidia.com/gpu.present": "true"},
       "head_resources": {"cpu": "4", "memory": "16Gi"},
       "worker_resources": {"cpu": "8", "memory": "64Gi"}}


def _by_kind(objs):
    out = {}
    for obj in objs:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def test_70b_on_the_reference_site():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    objs = _by_kind(manifests(plan, CFG))
    clusters = objs["RayCluster"]
    assert len(clusters) == plan["replicas"]
    rc = clusters[0]["spec"]
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert rc["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in head["env"]
    args = head["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == str(plan["tensor_parallel_size"])
    assert args[args.index("--pipeline-parallel-size") + 1] == str(
        plan["pipeline_parallel_size"])
    # the executor is the launcher's choice, never rendered
    assert "--distributed-executor-backend" not in args
    assert args[args.index("--") + 1:][:2] == ["--dtype", "bfloat16"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in (
        head["env"])
    workers = rc["workerGroupSpecs"][0]
    assert workers["replicas"] == plan["nodes_per_replica"]
    worker = workers["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == plan["tensor_parallel_size"]
    assert workers["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    for container in (head, worker):
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert objs["Service"][0]["spec"]["ports"] == [{"name": "api", "port": 8000,
                                                    "targetPort": 8000, "protocol": "TCP"}]
    assert objs["Route"][0]["spec"]["port"] == {"targetPort": "api"}
    assert objs["Route"][0]["spec"]["tls"]["termination"] == "edge"


def test_replicas_become_separate_clusters():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    clusters = _by_kind(manifests(plan, CFG))["RayCluster"]
    names = [c["metadata"]["name"] for c in clusters]
    assert names == [f"llm-{i}" for i in range(plan["replicas"])]


@pytest.mark.parametrize(("change", "message"), [
    ({"image": "registry.example.com/llmops/ray-vllm"}, "needs a tag or a digest"),
    ({"image": "registry:5000/ray-vllm"}, "needs a tag or a digest"),
    ({"served_model_name": "bad name!"}, "may only hold"),
    ({"name": "Bad_Name"}, "must be a DNS label"),
])
def test_bad_inputs(change, message):
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    with pytest.raises(InvalidInputError, match=message):
        manifests(plan, {**copy.deepcopy(CFG), **change})


def test_digest_pinned_image_is_accepted():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    cfg = {**CFG, "image": "registry.example.com/llmops/ray-vllm@sha256:" + "a" * 64}
    assert _by_kind(manifests(plan, cfg))["RayCluster"]


def test_extra_args_env_and_ray_params():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    cfg = {**CFG, "extra_vllm_args": ["--enforce-eager"],
           "head_ray_params": {"object-store-memory": 100000000},
           "worker_ray_params": {"object-store-memory": 100000000},
           "env": {"OMP_NUM_THREADS": 1}, "tolerations": [toleration]}
    rc = _by_kind(manifests(plan, cfg))["RayCluster"][0]["spec"]
    head_spec = rc["headGroupSpec"]["template"]["spec"]
    head = head_spec["containers"][0]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in head["env"]
    # the product renders nothing for a test bed: only POD_IP, the GPU-less head's
    # NVIDIA_VISIBLE_DEVICES and the given env
    assert sorted(e["name"] for e in head["env"]) == [
        "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "POD_IP"]
    assert head["args"][-1] == "--enforce-eager"
    assert rc["headGroupSpec"]["rayStartParams"] == {
        "object-store-memory": "100000000", "dashboard-host": "127.0.0.1", "num-gpus": "0"}
    worker_group = rc["workerGroupSpecs"][0]
    worker = worker_group["template"]["spec"]["containers"][0]
    assert sorted(e["name"] for e in worker["env"]) == ["OMP_NUM_THREADS", "POD_IP"]
    assert worker_group["rayStartParams"] == {"object-store-memory": "100000000"}
    # the GPU-less head stays off the GPU nodes' selector and tolerations
    assert "tolerations" not in head_spec and "nodeSelector" not in head_spec
    assert worker_group["template"]["spec"]["tolerations"] == [toleration]


@pytest.mark.parametrize(("plan", "message"), [
    ({}, "missing tensor_parallel_size"),
    ({"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "vllm_args": [],
      "ray_cluster": {"clusters": 1}}, "ray_cluster.head_gpus"),
])
def test_plans_that_are_not_planner_output_are_refused(plan, message):
    with pytest.raises(InvalidInputError, match=message):
        manifests(plan, CFG)


@pytest.mark.parametrize(("change", "message"), [
    ({"route_timeout": "ten minutes"}, "route_timeout"),
    ({"worker_resources": {"cpu": "8"}}, "worker_resources needs a memory"),
])
def test_bad_settings(change, message):
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    with pytest.raises(InvalidInputError, match=message):
        manifests(plan, {**CFG, **change})


def test_the_handover_records_what_validate_needs():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    record = handover(CFG, "https://llm-serving.apps.example.com", plan)
    assert record["kind"] == "ConfigMap"
    assert record["metadata"]["name"] == handover_name("llm") == "llm-endpoint"
    assert record["metadata"]["namespace"] == "serving"
    data = record["data"]
    assert data["endpoint"] == "https://llm-serving.apps.example.com"
    assert data["api_key_secret"] == "llm-api-key"
    assert data["served_model_name"] == CFG["served_model_name"]
    assert data["clusters"].split(",") == [f"llm-{i}" for i in range(plan["replicas"])]
    assert data["tensor_parallel_size"] == str(plan["tensor_parallel_size"])
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap data is strings
    assert handover({**CFG, "api_key_secret": ""}, None, plan)["data"]["endpoint"] == ""
