"""ray_vllm_cluster against the lab: bad inputs are refused before any write (checked by
listing the API), check mode writes nothing, the API key Secret is kept or generated."""

from __future__ import annotations

import base64
import copy
import json

import httpx
import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from .k8s_helpers import api, custom, run_module, run_play, stage_tiny_model

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "llm"


@pytest.fixture(scope="module")
def lab_with_model(k8s_lab_factory, tmp_path_factory):
    """A lab with 16 allocatable GPUs (the OpenShift stage) and the tiny model staged."""
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    model = stage_tiny_model(lab, tmp_path_factory.mktemp("serving-inputs"), NS)
    return lab, model


def _plan(lab, tmp_path, model, nodes=2, tp=2, pp=2):
    rc, res, out = run_module(lab, tmp_path, "serving_plan", {
        "model": {"config_path": str(model / "config.json")},
        "hardware": {"nodes": nodes, "gpus_per_node": 2, "gpu_memory_gib": 80},
        "layout": {"tensor_parallel_size": tp, "pipeline_parallel_size": pp}})
    assert rc == 0, out[-2000:]
    return res["plan"]


ROLE_TASKS = [{"ansible.builtin.include_role": {"name": "llmops.gpu_stack.ray_vllm"}},
              {"ansible.builtin.debug": {"var": "ray_vllm_served"}}]
# The gateway role as site.yml runs it after the serving stage (its models from the
# hand-overs); its image runs LiteLLM as a process pod in the lab.
GATEWAY_TASKS = [{"ansible.builtin.include_role": {"name": "llmops.gpu_stack.llm_gateway"}}]
GATEWAY_VARS = {"llm_gateway_namespace": NS, "llm_gateway_wait_timeout": 300}

# An image the lab's kubelet simulates (the collection's own images run as processes:
# these tests are about what is written, test_ray_vllm_lab.py runs the real thing).
SIM_IMAGE = "registry.example.com/example/serving-sim:1.0"


def _args(planned, **change):
    args = {"namespace": NS, "plan": planned, "image": SIM_IMAGE,
            "served_model_name": "tiny-llama", "model_dir": "tiny-llama", "wait": False}
    args.update(change)
    return args


def _serving_objects(lab) -> dict:
    core = client.CoreV1Api(api(lab))
    return {"rayclusters": [c["metadata"]["name"] for c in custom(lab, "ray.io/v1",
                                                                  "rayclusters", NS)],
            "secrets": sorted(s.metadata.name for s in core.list_namespaced_secret(NS).items
                              if s.metadata.name.endswith("api-key")),
            "services": sorted(s.metadata.name for s in core.list_namespaced_service(NS).items),
            "routes": [r["metadata"]["name"] for r in custom(
                lab, "route.openshift.io/v1", "routes", NS)]}


@pytest.mark.parametrize(("change", "message"), [
    ({"image": "registry.example.com/example/serving-sim"}, "needs a tag or a digest"),
    ({"served_model_name": "tiny llama!"}, "may only hold"),
    ({"model_pvc": "no-such-claim"}, "model volume llm/no-such-claim does not exist"),
    ({"plan": {"replicas": 1}}, "plan is not a serving_plan result"),
    ({"route_timeout": "forever"}, "route_timeout"),
    # the lab serves no KServe (no Red Hat OpenShift AI / Open Data Hub installed)
    ({"backend": "kserve"}, "backend kserve needs KServe, but the cluster serves no "
                            "InferenceService"),
])
def test_bad_inputs_are_refused_before_any_write(lab_with_model, tmp_path, change, message):
    lab, model = lab_with_model
    before = _serving_objects(lab)
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster",
                              _args(_plan(lab, tmp_path, model), **change))
    assert rc != 0 and message in res.get("msg", ""), out[-2000:]
    assert _serving_objects(lab) == before


def test_a_layout_larger_than_the_gpu_nodes_is_refused_with_the_numbers(lab_with_model,
                                                                        tmp_path):
    lab, model = lab_with_model
    before = _serving_objects(lab)
    # 10 nodes x 2 GPUs planned, the lab's 8 GPU nodes report 16 GPUs
    plan = _plan(lab, tmp_path, model, nodes=10, tp=2, pp=1)
    assert plan["replicas"] == 10
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(plan))
    assert rc != 0, out[-2000:]
    assert "needs 20 GPUs" in res["msg"] and "can hold 8" in res["msg"], res["msg"]
    assert "ocp-worker-0=2" in res["msg"]
    assert res["gpus_needed"] == 20 and res["pods_possible"] == 8
    assert _serving_objects(lab) == before


def test_check_mode_writes_nothing_and_the_key_is_generated_once(lab_with_model, tmp_path):
    lab, model = lab_with_model
    plan = _plan(lab, tmp_path, model)
    before = _serving_objects(lab)
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(plan),
                              extra=("--check", "--diff"))
    assert rc == 0 and res["changed"] is True, out[-2000:]
    assert "RayCluster/llm-0" in res["diff"]["after"]
    assert "ConfigMap/llm-endpoint" in res["diff"]["after"]  # the hand-over, in the diff
    assert _serving_objects(lab) == before

    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(plan))
    assert rc == 0 and res["changed"] is True, out[-2000:]
    assert res["clusters"] == ["llm-0"] and res["api_key_secret"] == "llm-api-key"
    core = client.CoreV1Api(api(lab))
    key = core.read_namespaced_secret("llm-api-key", NS).data["api-key"]
    assert len(base64.b64decode(key)) >= 32
    assert base64.b64decode(key).decode() not in out  # the key is never in the output
    rc_obj = custom(lab, "ray.io/v1", "rayclusters", NS)[0]
    assert [g["replicas"] for g in rc_obj["spec"]["workerGroupSpecs"]] == [2]
    # the stage's declared outputs, on the cluster for a later stage
    handover = core.read_namespaced_config_map("llm-endpoint", NS).data
    assert handover["api_key_secret"] == "llm-api-key"
    assert handover["served_model_name"] == "tiny-llama" and handover["namespace"] == NS
    assert handover["clusters"] == "llm-0" and handover["tensor_parallel_size"] == "2"
    assert handover["endpoint"] == res.get("endpoint", "")

    # the same again: nothing changes, the generated key stays
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(plan),
                              extra=("--diff",))
    assert rc == 0 and res["changed"] is False, res.get("msg")
    assert core.read_namespaced_secret("llm-api-key", NS).data["api-key"] == key

    # a given key replaces it; then removal deletes what was written
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster",
                              _args(plan, llm_api_key="given-key-0123"), extra=("-vvv",),
                              json_out=False)
    assert rc == 0 and "changed: [localhost]" in out, out[-2000:]
    assert "given-key-0123" not in out
    assert base64.b64decode(core.read_namespaced_secret("llm-api-key", NS).data[
        "api-key"]).decode() == "given-key-0123"
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster",
                              {"namespace": NS, "state": "absent"})
    assert rc == 0 and res["changed"] is True, out[-2000:]
    after = _serving_objects(lab)
    assert after["rayclusters"] == [] and after["secrets"] == [] and after["routes"] == []
    assert "llm-endpoint" not in {c.metadata.name for c in
                                  core.list_namespaced_config_map(NS).items}
    assert "llm" not in after["services"]


def test_fewer_replicas_delete_the_extra_clusters(lab_with_model, tmp_path):
    lab, model = lab_with_model
    two = _plan(lab, tmp_path, model, nodes=2, tp=2, pp=1)
    assert two["replicas"] == 2
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(two))
    assert rc == 0, out[-2000:]
    assert sorted(_serving_objects(lab)["rayclusters"]) == ["llm-0", "llm-1"]
    one = copy.deepcopy(two)
    one["ray_cluster"]["clusters"] = 1
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(one))
    assert rc == 0 and res["changed"] is True, out[-2000:]
    assert _serving_objects(lab)["rayclusters"] == ["llm-0"]
    run_module(lab, tmp_path, "ray_vllm_cluster", {"namespace": NS, "state": "absent"})


def test_check_mode_warns_about_what_earlier_stages_would_provide(lab_with_model, tmp_path):
    lab, model = lab_with_model
    before = _serving_objects(lab)
    plan = _plan(lab, tmp_path, model, nodes=10, tp=2, pp=1)  # more GPUs than the lab has
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster",
                              _args(plan, model_pvc="not-staged-yet"), extra=("--check",))
    assert rc == 0 and res["changed"] is True, out[-2000:]
    warnings = " ".join(res.get("warnings", []))
    assert "needs 20 GPUs" in warnings and "check mode" in warnings, warnings
    assert _serving_objects(lab) == before
    # input errors still fail in check mode
    rc, res, out = run_module(lab, tmp_path, "ray_vllm_cluster",
                              _args(plan, served_model_name="a b"), extra=("--check",))
    assert rc != 0 and "may only hold" in res["msg"]


def _role_vars(models: list, **change) -> dict:
    """The role's variables as the lab inventory sets them for vLLM on CPU
    (inventories/lab/group_vars/all/serving.yml)."""
    return {"ray_vllm_namespace": NS, "ray_vllm_models": models, "ray_vllm_check_args": False,
            "ray_vllm_wait_timeout": 400, "ray_vllm_startup_checks": 300,
            "ray_vllm_head_resources": {"cpu": "1", "memory": "1Gi"},
            "ray_vllm_worker_resources": {"cpu": "1", "memory": "2Gi"}, "ray_vllm_shm_size": "1Gi",
            "ray_vllm_extra_vllm_args": ["--enforce-eager", "--kv-cache-memory-bytes", "64M"],
            **change}


def _completion(lab, host: str, key: str | None) -> httpx.Response:
    router = json.loads((lab.settings.home / "router.json").read_text())
    headers = {"Host": host, **({"Authorization": f"Bearer {key}"} if key else {})}
    with httpx.Client(verify=router["ca"], timeout=60, headers=headers) as http:
        return http.post(router["url"] + "/v1/completions", json={
            "model": "tiny-llama", "prompt": "Hello", "max_tokens": 4})


def test_the_role_serves_models_on_both_backends_and_prunes_a_removed_one(lab_with_model,
                                                                          tmp_path):
    """ray_vllm_models: a real vLLM (CPU) on the deployment backend (a process pod, no
    Ray) answers through its Route with its key and 401 without, /health open; beside it
    a simulated model on the Ray backend; the gateway routes both. Dropped from the list
    and the stages rerun, the deployment model loses every object and its gateway entry
    (the gateway's own /v1/models), and the model left is not touched."""
    lab, model = lab_with_model
    config = str(model / "config.json")
    ray_plan = build_plan({"config_path": config}, {"nodes": 2, "gpus_per_node": 2,
                                                    "gpu_memory_gib": 80},
                          layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    small = build_plan({"config_path": config, "dtype": "float16"},
                       {"nodes": 1, "gpus_per_node": 1, "gpu_memory_gib": 80})
    assert small["replicas"] == 1 and small["nodes_per_replica"] == 1
    models = [{"name": "big/Model-A", "model_dir": "tiny-llama", "backend": "ray",
               "plan": ray_plan, "image": SIM_IMAGE},
              {"name": "tiny-llama", "model_dir": "tiny-llama", "backend": "deployment",
               "plan": small, "image": "registry.example.com/llmops/ray-vllm:0.1.0"}]
    core, apps = client.CoreV1Api(api(lab)), client.AppsV1Api(api(lab))
    try:
        rc, results, out = run_play(lab, tmp_path, ROLE_TASKS, vars_file=_role_vars(models))
        assert rc == 0, out[-4000:]
        served = results[-1]["ray_vllm_served"]
        assert [(s["name"], s["release"], s["backend"]) for s in served] == [
            ("big/Model-A", "big-model-a", "ray"), ("tiny-llama", "tiny-llama", "deployment")]
        assert [c["metadata"]["name"] for c in custom(lab, "ray.io/v1", "rayclusters", NS)] == [
            "big-model-a-0"]
        dep = apps.read_namespaced_deployment("tiny-llama", NS)
        assert dep.spec.replicas == 1 and dep.status.ready_replicas == 1
        (pod,) = core.list_namespaced_pod(NS, label_selector=(
            "app.kubernetes.io/instance=tiny-llama,app.kubernetes.io/component=vllm-server")).items
        assert pod.spec.containers[0].readiness_probe.http_get.path == "/health"
        log = core.read_namespaced_pod_log(pod.metadata.name, NS)
        assert "multiprocessing executor" in log and "ray start" not in log
        handovers = {c.metadata.name: c.data for c in core.list_namespaced_config_map(
            NS, label_selector="app.kubernetes.io/component=serving-handover").items}
        assert handovers["big-model-a-endpoint"]["backend"] == "ray"
        assert handovers["tiny-llama-endpoint"]["backend"] == "deployment"
        key = base64.b64decode(core.read_namespaced_secret("tiny-llama-api-key", NS)
                               .data["api-key"]).decode()
        host = next(r["spec"]["host"] for r in custom(lab, "route.openshift.io/v1", "routes", NS)
                    if r["metadata"]["name"] == "tiny-llama")
        answer = _completion(lab, host, key)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] > 0
        assert _completion(lab, host, None).status_code == 401
        assert _completion(lab, host, "wrong-key").status_code == 401
        router = json.loads((lab.settings.home / "router.json").read_text())
        assert httpx.get(router["url"] + "/health", headers={"Host": host},
                         verify=router["ca"]).status_code == 200

        rc, _results, out = run_play(lab, tmp_path, GATEWAY_TASKS, vars_file=GATEWAY_VARS)
        assert rc == 0, out[-4000:]
        assert _gateway_models(lab, core) == ["big/Model-A", "tiny-llama"]

        rc, results, out = run_play(lab, tmp_path, ROLE_TASKS,
                                    vars_file=_role_vars(models[:1]))
        assert rc == 0, out[-4000:]
        rc, _results, out = run_play(lab, tmp_path, GATEWAY_TASKS, vars_file=GATEWAY_VARS)
        assert rc == 0, out[-4000:]
        assert _gateway_models(lab, core) == ["big/Model-A"]
        applied = next(r for r in results if r.get("results") and "handover" in r["results"][0])
        assert [item["changed"] for item in applied["results"]] == [False]  # A untouched
        assert "tiny-llama" not in {s.metadata.name for s in core.list_namespaced_service(
            NS).items}
        assert [d.metadata.name for d in apps.list_namespaced_deployment(
            NS, label_selector="app.kubernetes.io/name=vllm").items] == []
        left = {c.metadata.name for c in core.list_namespaced_config_map(NS).items}
        assert "tiny-llama-endpoint" not in left and "big-model-a-endpoint" in left
        assert "tiny-llama-api-key" not in {s.metadata.name for s in
                                            core.list_namespaced_secret(NS).items}
    finally:
        run_play(lab, tmp_path, [{"llmops.gpu_stack.ray_vllm_cluster": {
            "namespace": NS, "state": "absent", "name": name}}
            for name in ("big-model-a", "tiny-llama")]
            + [{"llmops.gpu_stack.llm_gateway": {"namespace": NS, "state": "absent"}}])
    assert custom(lab, "ray.io/v1", "rayclusters", NS) == []


def _gateway_models(lab, core) -> list[str]:
    """The models the running gateway lists on /v1/models (asked through its Route with
    its master key), checked against the entries of its generated configuration."""
    key = base64.b64decode(core.read_namespaced_secret("llm-gateway-master-key", NS)
                           .data["master-key"]).decode()
    host = next(r["spec"]["host"] for r in custom(lab, "route.openshift.io/v1", "routes", NS)
                if r["metadata"]["name"] == "llm-gateway")
    router = json.loads((lab.settings.home / "router.json").read_text())
    with httpx.Client(verify=router["ca"], timeout=60,
                      headers={"Host": host, "Authorization": f"Bearer {key}"}) as http:
        listed = http.get(router["url"] + "/v1/models")
    assert listed.status_code == 200, listed.text
    config = json.loads(core.read_namespaced_config_map("llm-gateway-config", NS)
                        .data["config.yaml"])
    entries = sorted({e["model_name"] for e in config["model_list"]})
    assert sorted(m["id"] for m in listed.json()["data"]) == entries
    return entries
