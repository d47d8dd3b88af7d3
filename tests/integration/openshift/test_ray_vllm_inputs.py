"""ray_vllm_cluster against the lab: bad inputs are refused before any write (checked by
listing the API), check mode writes nothing, the API key Secret is kept or generated."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys

import pytest
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from .k8s_helpers import REPO, api, custom, run_module, run_play

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "llm"


@pytest.fixture(scope="module")
def lab_with_model(k8s_lab_factory, tmp_path_factory):
    """A lab with 16 allocatable GPUs (the OpenShift stage) and the tiny model staged."""
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    work = tmp_path_factory.mktemp("serving-inputs")
    model = work / "tiny-llama"
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(model)], check=True,
                   capture_output=True)
    env = {"GPU_LAB_HOME": str(lab.settings.home)}
    rc, _t, out = run_play(lab, work, playbook=REPO / "playbooks" / "openshift.yml",
                           inventory=str(REPO / "inventories" / "lab"), env_extra=env,
                           json_out=False)
    assert rc == 0, out[-3000:]
    vars_file = work / "storage.json"
    vars_file.write_text(json.dumps({
        "gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
        "model_storage_namespace": NS, "model_storage_model_dir": "tiny-llama",
        "model_storage_pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
        "model_storage_source": {"type": "local", "local_path": str(model)}}))
    rc, _t, out = run_play(lab, work, playbook=REPO / "playbooks" / "storage.yml",
                           extra=("-e", f"@{vars_file}"), json_out=False)
    assert rc == 0, out[-3000:]
    return lab, model


def _plan(lab, tmp_path, model, nodes=2, tp=2, pp=2):
    rc, res, out = run_module(lab, tmp_path, "serving_plan", {
        "model": {"config_path": str(model / "config.json")},
        "hardware": {"nodes": nodes, "gpus_per_node": 2, "gpu_memory_gib": 80},
        "layout": {"tensor_parallel_size": tp, "pipeline_parallel_size": pp}})
    assert rc == 0, out[-2000:]
    return res["plan"]


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
