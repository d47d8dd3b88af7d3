"""The deployment backend (plain vLLM pods, no Ray) through serving_runner.run against an
in-memory cluster: objects, wait, key rotation, check mode, idempotence, switching a
model between backends. Outcomes are read back from the fake cluster's objects."""

from __future__ import annotations

import base64
import copy
import hashlib

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import (
    Request,
    run,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from .fake_client import FakeClient
from .test_serving_runner import PLAN as RAY_PLAN
from .test_serving_runner import _cluster as _ray_cluster

NS = "llm"
HOST = "llm-llm.apps.example.com"
PLAN = build_plan({"preset": "llama-3-8b"},
                  {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1})
IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"
SHA = "gpu-stack.llmops.io/api-key-sha256"


def _controller(fake: FakeClient, dep: dict) -> None:
    """The Deployment controller and the kubelet at once: the template's pods, Ready
    (a new template replaces every pod), and the rollout's status."""
    template = dep["spec"]["template"]
    digest = hashlib.sha256(repr(template).encode()).hexdigest()[:8]
    for key in [k for k in fake.objects if k[0] == "Pod"]:
        del fake.objects[key]
    for i in range(dep["spec"]["replicas"]):
        fake.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"llm-{digest}-{i}", "namespace": NS,
                               "uid": f"{digest}-{i}",
                               "labels": dict(template["metadata"]["labels"]),
                               "annotations": dict(template["metadata"].get("annotations")
                                                   or {})},
                  "spec": {"nodeName": f"node-{i}", **template["spec"]},
                  "status": {"phase": "Running",
                             "conditions": [{"type": "Ready", "status": "True"}]}})
    n = dep["spec"]["replicas"]
    fake.put({**dep, "status": {"observedGeneration": 1, "replicas": n, "updatedReplicas": n,
                                "readyReplicas": n}})


def _router(fake: FakeClient, route: dict) -> None:
    admitted = copy.deepcopy(route)
    admitted["status"] = {"ingress": [{"host": HOST, "conditions": [
        {"type": "Admitted", "status": "True"}]}]}
    fake.put(admitted)


def _cluster(gpus_per_node: int = 2) -> FakeClient:
    fake = _ray_cluster(gpus_per_node)
    fake.on_apply["Deployment"] = _controller
    fake.on_apply["Route"] = _router
    return fake


def _request(**change) -> Request:
    args = {"namespace": NS, "plan": copy.deepcopy(PLAN), "image": IMAGE, "backend":
            "deployment", "served_model_name": "tiny-llama", "model_dir": "tiny-llama",
            "wait_timeout": 30}
    args.update(change)
    return Request(**args)


def _key(fake) -> str:
    return base64.b64decode(fake.find("Secret", "llm-api-key", NS)["data"]["api-key"]).decode()


def test_one_deployment_of_plain_vllm_pods_serves_the_plan():
    fake = _cluster()
    result = run(fake, _request())
    dep = fake.find("Deployment", "llm", NS)
    assert dep["spec"]["replicas"] == PLAN["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = dep["spec"]["template"]
    (vllm,) = pod["spec"]["containers"]
    assert vllm["command"] == ["gpu-stack-launch"] and vllm["args"][0] == "serve"
    assert vllm["args"][vllm["args"].index("--tensor-parallel-size") + 1] == "2"
    assert "--distributed-executor-backend" not in vllm["args"]  # the launcher's own call
    assert vllm["args"][vllm["args"].index("--api-key-file") + 1].endswith("/api-key")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["securityContext"]["runAsNonRoot"] is True
    assert pod["metadata"]["annotations"][SHA] == hashlib.sha256(
        _key(fake).encode()).hexdigest()
    assert pod["spec"]["nodeSelector"] == {"gpu-stack.llmops.io/gpu-node": "true"}
    assert not any(k[0] == "RayCluster" for k in fake.objects)
    service = fake.find("Service", "llm", NS)
    labels = pod["metadata"]["labels"]
    assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
    policy = fake.find("NetworkPolicy", "llm-api", NS)
    assert policy["spec"]["podSelector"]["matchLabels"] == service["spec"]["selector"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    data = fake.find("ConfigMap", "llm-endpoint", NS)["data"]
    assert data["backend"] == "deployment" and data["deployment"] == "llm"
    assert data["clusters"] == "" and data["replicas"] == "2"
    assert data["endpoint"] == f"https://{HOST}" and data["api_key_secret"] == "llm-api-key"
    assert result["backend"] == "deployment" and result["clusters"] == []
    assert "2 ready (vLLM healthy)" in " ".join(result["status"])


def test_rerun_and_check_mode_after_it_change_nothing():
    fake = _cluster()
    run(fake, _request())
    state = copy.deepcopy(fake.objects)
    result = run(fake, _request(diff=True))
    assert result["changed"] is False and "diff" not in result and result["rolled"] == []
    assert fake.objects == state
    writes = list(fake.writes)
    result = run(fake, _request(check_mode=True, diff=True))
    assert result["changed"] is False and fake.writes == writes


def test_check_mode_on_an_empty_cluster_writes_nothing():
    fake = _cluster()
    state = copy.deepcopy(fake.objects)
    result = run(fake, _request(check_mode=True, diff=True))
    assert result["changed"] is True and fake.writes == [] and fake.objects == state
    assert {"Deployment/llm", "NetworkPolicy/llm-api", "Service/llm"} <= set(
        result["diff"]["after"])


def test_a_new_key_rolls_the_pods_through_the_deployment():
    fake = _cluster()
    run(fake, _request())
    old_pods = {k for k in fake.objects if k[0] == "Pod"}
    result = run(fake, _request(llm_api_key="rotated-key-0123456789", diff=True))
    assert _key(fake) == "rotated-key-0123456789"
    assert result["rolled"] == ["llm"] and result["changed"] is True
    new_sha = hashlib.sha256(b"rotated-key-0123456789").hexdigest()
    pods = [fake.render(k) for k in fake.objects if k[0] == "Pod"]
    assert {(p["metadata"]["annotations"][SHA]) for p in pods} == {new_sha}
    assert not old_pods & {k for k in fake.objects if k[0] == "Pod"}
    assert "rotated-key-0123456789" not in repr(result)


def test_switching_a_model_from_ray_to_deployment_and_back_leaves_one_backend():
    fake = _cluster()
    fake.on_apply.update(_ray_cluster().on_apply)  # KubeRay's stand-in too
    fake.on_apply["Deployment"] = _controller
    run(fake, _request(backend="ray", plan=copy.deepcopy(RAY_PLAN)))
    assert fake.find("RayCluster", "llm-0", NS) and fake.find("NetworkPolicy", "llm-0-peers", NS)
    result = run(fake, _request(diff=True))
    assert fake.find("RayCluster", "llm-0", NS) is None
    assert fake.find("NetworkPolicy", "llm-0-peers", NS) is None
    assert fake.find("NetworkPolicy", "llm-ray", NS) is None
    assert fake.find("Deployment", "llm", NS) is not None
    assert result["diff"]["after"]["RayCluster/llm-0"] == {}
    assert fake.find("ConfigMap", "llm-endpoint", NS)["data"]["backend"] == "deployment"
    run(fake, _request(backend="ray", plan=copy.deepcopy(RAY_PLAN)))
    assert fake.find("Deployment", "llm", NS) is None
    assert fake.find("NetworkPolicy", "llm-api", NS) is None
    data = fake.find("ConfigMap", "llm-endpoint", NS)["data"]
    assert data["backend"] == "ray" and data["clusters"] == "llm-0" and data["deployment"] == ""


def test_a_replica_spanning_nodes_is_refused_before_the_cluster_is_touched():
    fake = _cluster()
    with pytest.raises(InvalidInputError, match=r"spans 2 nodes .*use backend 'ray'"):
        run(fake, _request(plan=copy.deepcopy(RAY_PLAN)))
    with pytest.raises(InvalidInputError, match="backend must be one of ray, deployment, kserve"):
        run(fake, _request(backend="knative"))
    assert fake.calls == [] and fake.writes == []


def test_too_few_gpus_per_node_are_refused_before_any_write():
    fake = _cluster(gpus_per_node=1)
    with pytest.raises(InvalidInputError, match=r"2 pod\(s\) with 2 nvidia.com/gpu each"):
        run(fake, _request())
    assert fake.writes == []


def test_a_pod_whose_launcher_fails_ends_the_wait_with_its_log():
    def _failing(fake, dep):
        _controller(fake, dep)
        pod_key = next(k for k in fake.objects if k[0] == "Pod")
        fake.put({**fake.render(pod_key), "status": {"containerStatuses": [
            {"state": {"terminated": {"exitCode": 3}}}]}})
        fake.pod_logs[pod_key[2]] = "no marker in /models/tiny-llama\n"
        dep_key = ("Deployment", NS, "llm")
        fake.objects[dep_key]["base"]["status"]["readyReplicas"] = 1

    fake = _cluster()
    fake.on_apply["Deployment"] = _failing
    with pytest.raises(OperationFailedError, match=r"(?s)model directory not ready.*no marker"):
        run(fake, _request())


def test_absent_removes_the_deployment_backend_too():
    fake = _cluster()
    run(fake, _request())
    result = run(fake, Request(namespace=NS, state="absent"))
    assert result["changed"] is True
    for kind, name in (("Deployment", "llm"), ("NetworkPolicy", "llm-api"), ("Service", "llm"),
                       ("Route", "llm"), ("ConfigMap", "llm-endpoint"),
                       ("Secret", "llm-api-key")):
        assert fake.find(kind, name, NS) is None, (kind, name)
