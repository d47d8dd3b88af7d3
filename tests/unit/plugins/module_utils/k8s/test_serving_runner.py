"""serving_runner.run against an in-memory cluster: decide, act, wait, record, check mode.

Every outcome is read back from the fake cluster's objects and its record of writes,
not from the runner's own result."""

from __future__ import annotations

import base64
import copy

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import (
    Request,
    run,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from .fake_client import FakeClient

NS = "llm"
HOST = "llm-llm.apps.example.com"
PLAN = build_plan({"preset": "llama-3-8b"},
                  {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                  topology="head_without_gpus")
GPU_LABEL = {"gpu-stack.llmops.io/gpu-node": "true"}


def _node(name: str, gpus: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": dict(GPU_LABEL)},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}}}


def _pod(cluster: dict, name: str, node_type: str, index: int = 0) -> dict:
    meta = cluster["metadata"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"],
                         "labels": {**meta["labels"], "ray.io/cluster": meta["name"],
                                    "ray.io/node-type": node_type}},
            "spec": {"nodeName": f"node-{index}"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def _kubelet(fake: FakeClient, cluster: dict) -> None:
    """KubeRay and the kubelet at once: the cluster's pods, scheduled and ready."""
    name = cluster["metadata"]["name"]
    fake.put(_pod(cluster, f"{name}-head", "head"))
    for group in cluster["spec"]["workerGroupSpecs"]:
        for i in range(group["replicas"]):
            fake.put(_pod(cluster, f"{name}-worker-{i}", "worker", i))


def _router(fake: FakeClient, route: dict) -> None:
    admitted = copy.deepcopy(route)
    admitted["status"] = {"ingress": [{"host": HOST, "conditions": [
        {"type": "Admitted", "status": "True"}]}]}
    fake.put(admitted)


def _cluster(gpus_per_node: int = 2, controllers: bool = True) -> FakeClient:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": "models", "namespace": NS},
           "spec": {"accessModes": ["ReadWriteMany"]}}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    return FakeClient([ns, pvc, _node("node-0", gpus_per_node), _node("node-1", gpus_per_node)],
                      on_apply={"RayCluster": _kubelet, "Route": _router} if controllers
                      else None)


def _request(**change) -> Request:
    args = {"namespace": NS, "plan": copy.deepcopy(PLAN),
            "image": "registry.example.com/llmops/ray-vllm:0.1.0",
            "served_model_name": "tiny-llama",
            "model_dir": "tiny-llama", "wait_timeout": 60}
    args.update(change)
    return Request(**args)


def test_first_run_applies_waits_and_records_the_handover():
    fake = _cluster()
    lines: list = []
    result = run(fake, _request(), progress=lines.append)
    assert result["changed"] is True
    assert result["endpoint"] == f"https://{HOST}"
    assert fake.find("RayCluster", "llm-0", NS)["spec"]["workerGroupSpecs"][0]["replicas"] == 2
    key = fake.find("Secret", "llm-api-key", NS)["data"]["api-key"]
    assert len(base64.b64decode(key)) >= 32
    handover = fake.find("ConfigMap", "llm-endpoint", NS)
    assert handover["data"]["endpoint"] == f"https://{HOST}"
    assert handover["data"]["api_key_secret"] == "llm-api-key"
    assert handover["data"]["served_model_name"] == "tiny-llama"
    assert handover["data"]["namespace"] == NS and handover["data"]["clusters"] == "llm-0"
    # recorded last, after the wait found the Route admitted
    assert fake.writes[-1] == ("apply", "ConfigMap", "llm-endpoint")
    assert "vLLM healthy" in " ".join(result["status"])


def test_a_rerun_changes_nothing():
    fake = _cluster()
    run(fake, _request())
    state = copy.deepcopy(fake.objects)
    result = run(fake, _request(diff=True))
    assert result["changed"] is False
    assert "diff" not in result
    assert fake.objects == state  # the generated key and the hand-over stay as they were


def test_check_mode_writes_nothing_and_returns_the_diff():
    fake = _cluster()
    state = copy.deepcopy(fake.objects)
    result = run(fake, _request(check_mode=True, diff=True))
    assert result["changed"] is True
    assert fake.writes == [] and fake.objects == state
    assert all(check for verb, _kind, check in
               (c for c in fake.calls if c[0] in ("apply", "delete")))  # dry runs only
    after = result["diff"]["after"]
    assert {"RayCluster/llm-0", "Service/llm", "Route/llm", "ConfigMap/llm-endpoint"} <= set(
        after)
    assert not any(key.startswith("Secret/") for key in after)  # the key never in a diff
    assert after["ConfigMap/llm-endpoint"]["data"]["endpoint"] == ""  # no Route yet
    assert "status" not in result and result["progress"] == []  # nothing waited for


def test_check_mode_after_a_run_reports_no_change():
    fake = _cluster()
    run(fake, _request())
    writes = list(fake.writes)
    result = run(fake, _request(check_mode=True, diff=True))
    assert result["changed"] is False and "diff" not in result
    assert fake.writes == writes


def test_the_wait_timeout_names_what_is_missing():
    fake = _cluster(controllers=False)  # no kubelet, no router: nothing becomes ready
    out: dict = {}
    with pytest.raises(WaitTimeout) as caught:
        run(fake, _request(wait_timeout=0), out=out)
    message = caught.value.msg
    assert "the serving stack llm/llm" in message
    assert "missing: llm-0, route" in message
    assert "0 of 3 pods scheduled" in message and "Route llm not admitted yet" in message
    assert fake.find("ConfigMap", "llm-endpoint", NS) is None  # no hand-over without serving
    assert out["api_key_secret"] == "llm-api-key" and out["clusters"] == ["llm-0"]


def test_a_failed_head_ends_the_wait_with_its_log():
    def _failing_kubelet(fake, cluster):
        pod = _pod(cluster, "llm-0-head", "head")
        pod["status"] = {"containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}
        fake.put(pod)

    fake = _cluster()
    fake.on_apply["RayCluster"] = _failing_kubelet
    fake.pod_logs["llm-0-head"] = "loading\nno config.json in /models/tiny-llama\n"
    with pytest.raises(OperationFailedError,
                       match=r"(?s)model directory not ready.*no config.json"):
        run(fake, _request())


@pytest.mark.parametrize(("change", "message"), [
    ({"image": "registry.example.com/llmops/ray-vllm"}, "needs a tag or a digest"),
    ({"served_model_name": "tiny llama!"}, "may only hold"),
    ({"plan": None}, "state=present needs: plan"),
    ({"model_dir": None, "image": None}, "state=present needs: image, model_dir"),
    ({"plan": {"replicas": 1}}, "plan is not a serving_plan result"),
    ({"route_timeout": "forever"}, "route_timeout"),
    ({"name": "Bad_Name"}, "must be a DNS label"),
    ({"state": "gone"}, "state must be one of present, absent"),
    ({"wait_timeout": -1}, "wait_timeout must not be negative"),
])
def test_bad_input_fails_before_the_cluster_is_touched(change, message):
    fake = _cluster()
    with pytest.raises(InvalidInputError, match=message):
        run(fake, _request(**change))
    assert fake.calls == [] and fake.writes == []


def test_too_few_gpus_are_refused_before_any_write():
    fake = _cluster(gpus_per_node=1)
    with pytest.raises(InvalidInputError, match=r"needs 4 GPUs .* can hold 0 .*node-0=1"):
        run(fake, _request())
    assert fake.writes == []


def test_check_mode_warns_where_an_earlier_stage_would_provide():
    fake = _cluster(gpus_per_node=1)
    result = run(fake, _request(check_mode=True))
    assert result["changed"] is True and fake.writes == []
    assert any("needs 4 GPUs" in w and "check mode" in w for w in result["warnings"])


def test_absent_removes_everything_including_the_handover():
    fake = _cluster()
    run(fake, _request())
    kinds = ("RayCluster", "Service", "Route", "NetworkPolicy", "Secret", "ConfigMap")
    assert run(fake, Request(namespace=NS, state="absent", check_mode=True))["changed"] is True
    assert fake.find("ConfigMap", "llm-endpoint", NS) is not None  # check mode kept it
    assert run(fake, Request(namespace=NS, state="absent"))["changed"] is True
    left = [key for key in fake.objects if key[0] in kinds]
    assert left == []
    assert run(fake, Request(namespace=NS, state="absent"))["changed"] is False
