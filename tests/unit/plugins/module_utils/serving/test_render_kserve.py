"""The ``kserve`` backend's objects rendered from real plans (issue 19's seed case:
Llama 3 70B on the 8 x 2 reference site), judged by KServe's own rules as its
controller source states them, re-derived here rather than taken from the renderer."""

from __future__ import annotations

import copy
import json
import math

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render_kserve
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from .netpol_eval import Pod, admits, selects
from .test_render import CFG as RAY_CFG
from .test_render import SITE

CFG = {**RAY_CFG, "api_key_sha256": "ab" * 32}


def _by_kind(objs):
    out = {}
    for obj in objs:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def _kserve_pods(runtime: dict, isvc: dict) -> tuple[int, int, int]:
    """(pods, head GPUs, worker GPUs) as KServe's Ray mode computes them: the
    InferenceService's workerSpec sizes over the runtime's, total = TP x PP, worker GPU
    request W: nodes = ceil(total / W), head = total - W x (nodes - 1) unless the head
    asks its own (then it must add up)."""
    sizes = {**runtime["spec"]["workerSpec"], **isvc["spec"]["predictor"]["workerSpec"]}
    total = sizes["tensorParallelSize"] * sizes["pipelineParallelSize"]
    worker = runtime["spec"]["workerSpec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    head = runtime["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    nodes = math.ceil(total / worker)
    assert head + worker * (nodes - 1) == total, "KServe refuses: InvalidGPUAllocation"
    return nodes, head, worker


def _arg(args: list, flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_seeds_70b_case_maps_tp_and_pp_onto_kserve():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    tp, pp = plan["tensor_parallel_size"], plan["pipeline_parallel_size"]
    assert (tp, pp, plan["replicas"]) == (2, 2, 4)  # the planner's layout, not restated
    objs = _by_kind(render_kserve.manifests(plan, CFG))
    (runtime,) = objs["ServingRuntime"]
    isvcs = objs["InferenceService"]
    assert [i["metadata"]["name"] for i in isvcs] == ["llm-0", "llm-1", "llm-2", "llm-3"]
    for isvc in isvcs:
        predictor = isvc["spec"]["predictor"]
        assert predictor["workerSpec"] == {"pipelineParallelSize": pp, "tensorParallelSize": tp}
        assert predictor["model"] == {"modelFormat": {"name": "vLLM"}, "runtime": "llm",
                                      "storageUri": "pvc://models/llama-3-70b"}
        assert isvc["metadata"]["annotations"] == {
            "serving.kserve.io/deploymentMode": "RawDeployment",
            "serving.kserve.io/autoscalerClass": "none"}
        assert "minReplicas" not in predictor and "maxReplicas" not in predictor  # one head
        # PP pods of TP GPUs: one pipeline stage per pod (per node), TP inside it
        assert _kserve_pods(runtime, isvc) == (pp, tp, tp)
    assert tp * pp * len(isvcs) == plan["gpus_used"] == 16


def test_the_head_runs_the_launcher_with_the_plans_layout_and_the_key_from_a_file():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    (runtime,) = _by_kind(render_kserve.manifests(plan, CFG))["ServingRuntime"]
    spec = runtime["spec"]
    (head,) = spec["containers"]
    assert head["name"] == "kserve-container" and head["command"] == ["gpu-stack-launch"]
    args = head["args"]
    assert args[0] == "head"
    assert _arg(args, "--model-dir") == "/mnt/models"  # where KServe mounts pvc://
    assert _arg(args, "--tensor-parallel-size") == "2"
    assert _arg(args, "--pipeline-parallel-size") == "2"
    assert _arg(args, "--served-model-name") == "llama-3-70b"
    # the GPUs come from the environment: the arguments are exactly what check-args parses
    assert "--num-gpus" not in args
    assert "--distributed-executor-backend" not in args  # the launcher's choice
    assert _arg(args, "--api-key-file").startswith("/var/run/secrets/")
    assert head["ports"][0] == {"name": "api", "containerPort": 8000, "protocol": "TCP"}
    assert head["readinessProbe"]["httpGet"]["path"] == "/health"
    # KServe refuses the parallel sizes as env of the runtime's container
    names = {e["name"] for e in head["env"]}
    assert not names & {"PIPELINE_PARALLEL_SIZE", "TENSOR_PARALLEL_SIZE"}
    assert not any("key" in e["name"].lower() for e in head["env"])
    assert {v["name"] for v in spec["volumes"]} == {"dshm", "api-key"}
    assert {"name": "api-key", "secret": {"secretName": "llm-api-key"}} in spec["volumes"]
    (worker,) = spec["workerSpec"]["containers"]
    assert worker["name"] == "worker-container"
    assert worker["args"] == ["worker", "--ray-address", "$(HEAD_SVC).$(POD_NAMESPACE).svc:6379"]
    for container in (head, worker):
        assert {"name": contract.LAUNCH_NUM_GPUS_ENV, "value": "2"} in container["env"]
    # $(POD_NAMESPACE) expands only where the container defines it
    assert "POD_NAMESPACE" in {e["name"] for e in worker["env"]}
    assert not any(m["name"] == "api-key" for m in worker["volumeMounts"])
    for container in (head, worker):
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": 2}
        # the model volume is KServe's (kserve-pvc-source), never rendered twice
        assert not any(m["mountPath"] == "/models" for m in container["volumeMounts"])
    assert spec["nodeSelector"] == spec["workerSpec"]["nodeSelector"] == CFG["node_selector"]
    assert "llm-api-key" not in json.dumps(spec["workerSpec"])


def test_the_models_service_selects_heads_only_and_the_key_digest_rolls_the_pods():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    objs = _by_kind(render_kserve.manifests(plan, CFG))
    (runtime,) = objs["ServingRuntime"]
    (service,) = objs["Service"]
    (route,) = objs["Route"]
    selector = service["spec"]["selector"]
    # KServe puts the runtime's pod labels on the head, workerSpec's on the workers
    assert selects({"matchLabels": selector}, runtime["spec"]["labels"])
    assert not selects({"matchLabels": selector}, runtime["spec"]["workerSpec"]["labels"])
    assert service["metadata"]["name"] == route["spec"]["to"]["name"] == "llm"
    assert route["spec"]["tls"]["termination"] == "edge"
    for isvc in objs["InferenceService"]:
        assert isvc["spec"]["predictor"]["annotations"] == {
            "gpu-stack.llmops.io/api-key-sha256": "ab" * 32}
        assert isvc["spec"]["predictor"]["serviceAccountName"] == "ray-vllm"
    assert objs["ServiceAccount"][0]["metadata"]["name"] == "ray-vllm"


def test_ray_stays_inside_each_inference_service_and_the_api_port_is_open():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    objs = _by_kind(render_kserve.manifests(plan, CFG))
    policies = objs["NetworkPolicy"]
    (runtime,) = objs["ServingRuntime"]
    head_labels, worker_labels = runtime["spec"]["labels"], runtime["spec"]["workerSpec"]["labels"]

    def pod(isvc, role):
        labels = {**(head_labels if role == "head" else worker_labels),
                  "serving.kserve.io/inferenceservice": isvc}
        return Pod(f"{isvc}-{role}", "serving", labels, {"api": 8000})

    head0, worker0, head1 = pod("llm-0", "head"), pod("llm-0", "worker"), pod("llm-1", "head")
    outsider = Pod("client", "serving", {"app": "client"})
    assert admits(policies, worker0, head0, 6379)  # the worker joins its head's GCS
    assert admits(policies, head0, worker0, 40000)  # Ray's random ports, both ways
    assert not admits(policies, head1, worker0, 40000)  # another replica is another cluster
    assert not admits(policies, outsider, head0, 6379)
    assert not admits(policies, outsider, worker0, 8000)
    assert admits(policies, outsider, head0, 8000)  # the API: the key check guards it
    assert [p["metadata"]["name"] for p in policies] == [
        "llm-0-peers", "llm-1-peers", "llm-2-peers", "llm-3-peers", "llm-kserve"]


def test_a_model_on_one_gpu_is_one_pod_per_replica():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    objs = _by_kind(render_kserve.manifests(plan, {**CFG, "served_model_name": "llama-3-8b"}))
    (runtime,) = objs["ServingRuntime"]
    assert len(objs["InferenceService"]) == 16
    assert _kserve_pods(runtime, objs["InferenceService"][0]) == (1, 1, 1)


def test_older_rhoai_gets_the_external_autoscaler_and_anything_else_is_refused():
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    isvc = _by_kind(render_kserve.manifests(plan, {**CFG, "autoscaler_class": "external"}))[
        "InferenceService"][0]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    with pytest.raises(InvalidInputError, match="autoscaler_class 'hpa' must be one of none"):
        render_kserve.manifests(plan, {**CFG, "autoscaler_class": "hpa"})


def test_tensor_parallelism_across_pods_is_refused():
    plan = build_plan({"preset": "llama-3-70b"}, SITE,
                      layout={"tensor_parallel_size": 4, "pipeline_parallel_size": 1,
                              "allow_cross_node_tp": True})
    with pytest.raises(InvalidInputError,
                       match=r"TP 4 x PP 1 on pods of 2, 2 GPU\(s\): a tensor parallel group "
                             "may not span pods; use backend ray"):
        render_kserve.manifests(plan, CFG)


@pytest.mark.parametrize("key, value", [("tensor_parallel_size", 0),
                                        ("pipeline_parallel_size", -1),
                                        ("pipeline_parallel_size", "2"),
                                        ("tensor_parallel_size", True)])
def test_parallel_sizes_below_one_or_not_whole_numbers_are_refused(key, value):
    plan = copy.deepcopy(build_plan({"preset": "llama-3-70b"}, SITE))
    plan[key] = value
    with pytest.raises(InvalidInputError, match=f"{key} must be a whole number >= 1"):
        render_kserve.manifests(plan, CFG)


def test_parallel_sizes_that_do_not_match_the_gpus_per_pod_are_refused():
    plan = copy.deepcopy(build_plan({"preset": "llama-3-70b"}, SITE))
    plan["pipeline_parallel_size"] = 3  # the plan's pods hold 2 stages, not 3
    with pytest.raises(InvalidInputError, match="here 3 pod"):
        render_kserve.manifests(plan, CFG)
