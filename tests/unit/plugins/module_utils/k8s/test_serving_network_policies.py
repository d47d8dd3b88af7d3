"""The serving stage's side of "Ray stays private": one NetworkPolicy per RayCluster (a
replica the plan drops loses its policy with its RayCluster, ``absent`` removes every
policy it wrote) and the metrics key in the API-key Secret (generated once, kept across
reruns and rotations). Read back from the fake API's store, not from the returns."""

from __future__ import annotations

import base64
import copy

from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving import (
    RayVllmDeployment,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from .fake_client import FakeClient

NS = "llm"
CFG = {"name": "llm", "namespace": NS, "image": "registry.example.com/llmops/ray-vllm:0.1.0",
       "served_model_name": "tiny", "model_dir": "tiny", "pvc": "models",
       "api_key_secret": "llm-api-key", "service_account": "ray-vllm", "ray_version": "2.60.0",
       "shm_size": "1Gi", "startup_checks": 10, "route_timeout": "600s",
       "head_resources": {"cpu": "1", "memory": "4Gi"},
       "worker_resources": {"cpu": "1", "memory": "4Gi"}}


def _plan(clusters: int) -> dict:
    plan = build_plan({"preset": "llama-3-8b"},
                      {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                      layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
                      topology="head_without_gpus")
    plan = copy.deepcopy(plan)
    plan["ray_cluster"]["clusters"] = clusters
    return plan


def _policies(fake: FakeClient) -> list[str]:
    return sorted(name for kind, ns, name in fake.objects if kind == "NetworkPolicy")


def test_policies_follow_the_rayclusters():
    fake = FakeClient([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    deployment = RayVllmDeployment(fake, dict(CFG))
    deployment.apply(_plan(2), check_mode=False)
    assert _policies(fake) == ["llm-0-peers", "llm-1-peers", "llm-ray"]
    deployment.apply(_plan(1), check_mode=True)  # check mode deletes nothing
    assert _policies(fake) == ["llm-0-peers", "llm-1-peers", "llm-ray"]
    deployment.apply(_plan(1), check_mode=False)
    assert _policies(fake) == ["llm-0-peers", "llm-ray"]
    assert fake.find("RayCluster", "llm-1", NS) is None
    assert deployment.remove(check_mode=False) is True
    assert _policies(fake) == []


def _secret(fake: FakeClient) -> dict:
    """The Secret as stored (base64 data), decoded."""
    data = fake.find("Secret", "llm-api-key", NS).get("data") or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_the_secret_holds_a_metrics_key_kept_across_reruns_and_rotations():
    fake = FakeClient([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    deployment = RayVllmDeployment(fake, dict(CFG))
    assert deployment.ensure_api_key(None, check_mode=False) is True
    first = _secret(fake)
    assert first["metrics-key"] and first["api-key"] and first["metrics-key"] != first["api-key"]
    assert deployment.ensure_api_key(None, check_mode=False) is False
    assert deployment.ensure_api_key("rotated", check_mode=False) is True
    assert _secret(fake) == {"api-key": "rotated", "metrics-key": first["metrics-key"]}


def test_a_secret_without_a_metrics_key_gets_one_and_keeps_its_api_key():
    old = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm-api-key",
                                                              "namespace": NS},
           "data": {"api-key": base64.b64encode(b"the-old-key").decode()}}
    fake = FakeClient([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                       old])
    deployment = RayVllmDeployment(fake, dict(CFG))
    assert deployment.ensure_api_key(None, check_mode=True) is True
    assert "metrics-key" not in _secret(fake)  # check mode wrote nothing
    assert deployment.ensure_api_key(None, check_mode=False) is True
    secret = _secret(fake)
    assert secret["api-key"] == "the-old-key" and secret["metrics-key"]
