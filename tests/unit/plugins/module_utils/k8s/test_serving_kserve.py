"""The kserve backend (KServe's multi-node InferenceServices) through serving_runner.run
against an in-memory cluster with a stand-in for KServe's controller: objects, wait,
check mode, idempotence, fewer replicas, switching backends, KServe missing, a failing
head. Outcomes are read back from the fake cluster's objects."""

from __future__ import annotations

import copy

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
from gpu_stack_runtime.launcher import options

from .test_serving_deployment import _cluster as _deployment_cluster
from .test_serving_deployment import _controller as _deployment_controller
from .test_serving_runner import PLAN as RAY_PLAN
from .test_serving_runner import _kubelet

NS = "llm"
IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"
SITE = {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80}
# TP 2 x PP 2: one replica of two pods (a head and a worker) of two GPUs each
PLAN = build_plan({"preset": "llama-3-8b"}, SITE,
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
ISVC = "serving.kserve.io/inferenceservice"


def _kserve(fake, isvc: dict, fail_head: bool = False) -> None:
    """KServe's controller and the kubelet at once: the head (the runtime's pod labels)
    and PP - 1 workers (workerSpec's labels) of the InferenceService, Running, and its
    Ready condition for the current generation."""
    runtime = fake.find("ServingRuntime", isvc["spec"]["predictor"]["model"]["runtime"], NS)
    name = isvc["metadata"]["name"]
    workers = isvc["spec"]["predictor"]["workerSpec"]["pipelineParallelSize"] - 1
    for key in [k for k in fake.objects if k[0] == "Pod" and k[2].startswith(f"{name}-")]:
        del fake.objects[key]
    pods = [("predictor", runtime["spec"]["labels"], runtime["spec"]["containers"][0])]
    pods += [(f"worker-{i}", runtime["spec"]["workerSpec"]["labels"],
              runtime["spec"]["workerSpec"]["containers"][0]) for i in range(workers)]
    for suffix, labels, container in pods:
        status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        if fail_head and suffix == "predictor":
            status = {"phase": "Running", "containerStatuses": [
                {"state": {"terminated": {"exitCode": 3}}}]}
        fake.put({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"{name}-{suffix}", "namespace": NS,
                               "labels": {**labels, ISVC: name}},
                  "spec": {"nodeName": "node-0", "containers": [container]},
                  "status": status})
    ready = "False" if fail_head else "True"
    fake.put({**isvc, "status": {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": ready, "reason": "PredictorNotReady"}]}})


def _cluster():
    fake = _deployment_cluster()
    fake.on_apply.update(InferenceService=_kserve, RayCluster=_kubelet,
                         Deployment=_deployment_controller)
    return fake


def _request(**change) -> Request:
    args = {"namespace": NS, "plan": copy.deepcopy(PLAN), "image": IMAGE, "backend": "kserve",
            "served_model_name": "tiny-llama", "model_dir": "tiny-llama", "wait_timeout": 30}
    args.update(change)
    return Request(**args)


def test_an_inference_service_per_replica_on_the_models_runtime_serves_the_plan():
    fake = _cluster()
    result = run(fake, _request())
    runtime = fake.find("ServingRuntime", "llm", NS)
    isvc = fake.find("InferenceService", "llm-0", NS)
    assert runtime["spec"]["workerSpec"]["pipelineParallelSize"] == 2
    assert isvc["spec"]["predictor"]["workerSpec"] == {"pipelineParallelSize": 2,
                                                       "tensorParallelSize": 2}
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://models/tiny-llama"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "none"
    service = fake.find("Service", "llm", NS)
    pods = [fake.render(k) for k in fake.objects if k[0] == "Pod"]
    picked = [p["metadata"]["name"] for p in pods
              if all(p["metadata"]["labels"].get(k) == v
                     for k, v in service["spec"]["selector"].items())]
    assert picked == ["llm-0-predictor"]  # the head, never the worker
    assert fake.find("NetworkPolicy", "llm-0-peers", NS) and fake.find(
        "NetworkPolicy", "llm-kserve", NS)
    assert not any(k[0] in ("RayCluster", "Deployment") for k in fake.objects)
    data = fake.find("ConfigMap", "llm-endpoint", NS)["data"]
    assert data["backend"] == "kserve" and data["inference_services"] == "llm-0"
    assert data["clusters"] == "" and data["deployment"] == ""
    assert result["backend"] == "kserve" and result["clusters"] == []
    # what the role's check-args task runs in the head: the launcher's own parser takes it
    assert result["head_args"][0] == "head"
    parsed = options.build_parser({}).parse_args(
        ["check-args", "--executor", "ray", *result["head_args"][1:]])
    assert parsed.served_model_name == "tiny-llama" and parsed.model_dir == "/mnt/models"
    assert "llm-0: Ready" in result["status"]


def test_rerun_and_check_mode_after_it_change_nothing():
    fake = _cluster()
    run(fake, _request())
    state = copy.deepcopy(fake.objects)
    result = run(fake, _request(diff=True))
    assert result["changed"] is False and "diff" not in result and result["rolled"] == []
    assert fake.objects == state
    writes = list(fake.writes)
    assert run(fake, _request(check_mode=True))["changed"] is False
    assert fake.writes == writes


def test_a_new_key_is_reported_as_a_roll_of_each_inference_service():
    fake = _cluster()
    run(fake, _request())
    result = run(fake, _request(llm_api_key="rotated-key-0123456789"))
    assert result["rolled"] == ["llm-0"] and result["changed"] is True
    assert "rotated-key-0123456789" not in repr(result)


def test_fewer_replicas_delete_the_extra_inference_services():
    fake = _cluster()
    two = build_plan({"preset": "llama-3-8b"}, {**SITE, "nodes": 4},
                     layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    assert two["replicas"] == 2
    fake.put({**fake.find("Node", "node-0"), "metadata": {"name": "node-2", "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}})
    fake.put({**fake.find("Node", "node-0"), "metadata": {"name": "node-3", "labels": {
        "gpu-stack.llmops.io/gpu-node": "true"}}})
    run(fake, _request(plan=copy.deepcopy(two)))
    assert fake.find("InferenceService", "llm-1", NS)
    result = run(fake, _request(diff=True))
    assert fake.find("InferenceService", "llm-1", NS) is None
    assert fake.find("NetworkPolicy", "llm-1-peers", NS) is None
    assert fake.find("InferenceService", "llm-0", NS) is not None
    assert result["diff"]["after"]["InferenceService/llm-1"] == {}


def test_switching_between_ray_kserve_and_deployment_leaves_one_backend():
    fake = _cluster()
    run(fake, _request(backend="ray", plan=copy.deepcopy(RAY_PLAN)))
    assert fake.find("RayCluster", "llm-0", NS)
    run(fake, _request())
    assert fake.find("RayCluster", "llm-0", NS) is None
    assert fake.find("NetworkPolicy", "llm-ray", NS) is None
    assert fake.find("InferenceService", "llm-0", NS)
    one_node = build_plan({"preset": "llama-3-8b"}, SITE,
                          layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1})
    run(fake, _request(backend="deployment", plan=copy.deepcopy(one_node)))
    for kind, name in (("InferenceService", "llm-0"), ("ServingRuntime", "llm"),
                       ("NetworkPolicy", "llm-0-peers"), ("NetworkPolicy", "llm-kserve")):
        assert fake.find(kind, name, NS) is None, (kind, name)
    assert fake.find("Deployment", "llm", NS)
    run(fake, _request(state="absent"))
    assert not any(k[0] in ("Deployment", "InferenceService", "ServingRuntime", "Service")
                   for k in fake.objects)


def test_without_kserve_the_backend_is_refused_before_any_write_and_ray_still_works():
    fake = _cluster()
    fake.unserved |= {"InferenceService", "ServingRuntime"}
    with pytest.raises(InvalidInputError, match="backend kserve needs KServe, but the cluster "
                                                "serves no InferenceService"):
        run(fake, _request())
    assert fake.writes == []
    # the other backends never need KServe: looking for its objects finds none
    run(fake, _request(backend="ray", plan=copy.deepcopy(RAY_PLAN)))
    assert fake.find("RayCluster", "llm-0", NS)
    run(fake, _request(backend="ray", state="absent"))
    assert fake.find("RayCluster", "llm-0", NS) is None


def test_a_head_whose_launcher_fails_ends_the_wait_with_its_log():
    fake = _cluster()
    fake.on_apply["InferenceService"] = lambda f, obj: _kserve(f, obj, fail_head=True)
    fake.pod_logs["llm-0-predictor"] = "no marker in /mnt/models\n"
    with pytest.raises(OperationFailedError, match=r"(?s)model directory not ready.*no marker"):
        run(fake, _request())
