"""The kserve backend in the lab: KServe from the operators stage (the gpu_operators role's
Open Data Hub), then ray_vllm_cluster (backend kserve) serves the tiny model
as a multi-node InferenceService (TP 1 x PP 2: a head and a worker of one GPU each) on
the lab's KServe (its controller makes the head and worker Deployments; their pods run
the collection's launcher as real Ray and vLLM processes). Read back independently: the
InferenceService's status and Deployments from the API, tokens through the Route, a rerun
that changes nothing, check mode that writes nothing, a model volume that is not
ReadWriteMany refused before any write, the switch to another backend, removal."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
import yaml
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from ..lab.waiting import wait_for
from .k8s_helpers import api, custom, run_module, run_play, serving_platform, stage_tiny_model

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS, NAME, MODEL = "llm", "llm", "tiny-llama"
IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"  # the lab runs it as processes


def _args(plan: dict, **change) -> dict:
    args = {"namespace": NS, "name": NAME, "plan": plan, "image": IMAGE, "backend": "kserve",
            "served_model_name": MODEL, "model_dir": MODEL, "wait_timeout": 600,
            "worker_resources": {"cpu": "1", "memory": "2Gi"}, "shm_size": "1Gi",
            "extra_vllm_args": ["--enforce-eager", "--kv-cache-memory-bytes", "64M"]}
    args.update(change)
    return args


def _state(lab) -> str:
    """What the lab holds, for a failed run's message: the InferenceServices' status, the
    pods' phases and each pod's last log lines."""
    core = client.CoreV1Api(api(lab))
    lines = [json.dumps(i.get("status"), indent=1)
             for i in custom(lab, "serving.kserve.io/v1beta1", "inferenceservices", NS)]
    for pod in core.list_namespaced_pod(NS).items:
        lines.append(f"--- pod {pod.metadata.name}: {pod.status.phase}")
        try:
            lines.append(core.read_namespaced_pod_log(pod.metadata.name, NS)[-1500:])
        except client.ApiException as exc:
            lines.append(f"(no log: {exc.reason})")
    return "\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def served(k8s_lab_factory, tmp_path_factory):
    # KServe from the operators stage: Open Data Hub 3.0, known on OpenShift 4.19
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()),
                          ocp_version="4.19.10")
    work = tmp_path_factory.mktemp("kserve")
    model = stage_tiny_model(lab, work, NS)
    rc, _tasks, out = serving_platform(lab, work, "odh")
    assert rc == 0, out[-3000:]
    rc, res, out = run_module(lab, work, "serving_plan", {
        "model": {"config_path": str(model / "config.json"), "dtype": "float16"},
        "hardware": {"nodes": 2, "gpus_per_node": 1, "gpu_memory_gib": 80},
        "layout": {"tensor_parallel_size": 1, "pipeline_parallel_size": 2}})
    assert rc == 0, out[-2000:]
    plan = res["plan"]
    rc, res, out = run_module(lab, work, "ray_vllm_cluster", _args(plan))
    assert rc == 0, res.get("msg", out[-3000:]) + _state(lab)
    yield lab, work, plan, res
    run_module(lab, work, "ray_vllm_cluster", {"namespace": NS, "name": NAME,
                                               "state": "absent"})
    core = client.CoreV1Api(api(lab))
    wait_for(lambda: not core.list_namespaced_pod(
        NS, label_selector="serving.kserve.io/inferenceservice").items,
        "the serving pods removed", timeout=120, interval=1)


def test_one_inference_service_of_a_head_and_a_worker_serves_tokens(served):
    lab, _work, _plan, res = served
    (isvc,) = custom(lab, "serving.kserve.io/v1beta1", "inferenceservices", NS)
    assert isvc["metadata"]["name"] == f"{NAME}-0"
    ready = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert ready["Ready"] == "True"
    apps = client.AppsV1Api(api(lab))
    head = apps.read_namespaced_deployment(f"{NAME}-0-predictor", NS)
    worker = apps.read_namespaced_deployment(f"{NAME}-0-predictor-worker", NS)
    assert worker.spec.replicas == 1  # PP 2: the head and one worker
    for dep in (head, worker):
        (container,) = dep.spec.template.spec.containers
        assert container.resources.limits["nvidia.com/gpu"] == "1"
    core = client.CoreV1Api(api(lab))
    (head_pod,) = core.list_namespaced_pod(
        NS, label_selector=f"app=isvc.{NAME}-0-predictor").items
    assert "2 of 2 GPUs joined" in core.read_namespaced_pod_log(head_pod.metadata.name, NS)
    key = base64.b64decode(core.read_namespaced_secret(f"{NAME}-api-key", NS)
                           .data["api-key"]).decode()
    assert key not in json.dumps(res)
    route = custom(lab, "route.openshift.io/v1", "routes", NS)[0]
    assert res["endpoint"] == f"https://{route['spec']['host']}"
    router = json.loads((lab.settings.home / "router.json").read_text())
    http = httpx.Client(verify=router["ca"], headers={"Host": route["spec"]["host"]})
    llm = openai.OpenAI(base_url=router["url"] + "/v1", api_key=key, http_client=http)
    try:
        chunks = list(llm.completions.create(model=MODEL, prompt="Hello", max_tokens=16,
                                             stream=True, temperature=0))
    except openai.APIError as exc:
        pytest.fail(f"{exc}{_state(lab)}")
    assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks if c.choices)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router["url"] + "/v1", api_key="wrong",
                      http_client=http).models.list()
    data = core.read_namespaced_config_map(f"{NAME}-endpoint", NS).data
    assert data["backend"] == "kserve" and data["inference_services"] == f"{NAME}-0"


def test_a_rerun_changes_nothing(served):
    lab, work, plan, _res = served
    rc, res, out = run_module(lab, work, "ray_vllm_cluster", _args(plan))
    assert rc == 0 and res["changed"] is False, out[-3000:]


def _snapshot(lab) -> dict[str, str]:
    """What the module writes in the namespace, object by object: spec, data, labels and
    annotations (never status, which the lab's controllers keep writing)."""
    cl = api(lab)
    core, apps = client.CoreV1Api(cl), client.AppsV1Api(cl)
    net = client.NetworkingV1Api(cl)
    objs = []
    for kind, items in (("Deployment", apps.list_namespaced_deployment(NS).items),
                        ("Service", core.list_namespaced_service(NS).items),
                        ("Secret", core.list_namespaced_secret(NS).items),
                        ("ConfigMap", core.list_namespaced_config_map(NS).items),
                        ("NetworkPolicy", net.list_namespaced_network_policy(NS).items)):
        objs += [(kind, cl.sanitize_for_serialization(o)) for o in items]
    for group_version, plural in (("serving.kserve.io/v1beta1", "inferenceservices"),
                                  ("serving.kserve.io/v1alpha1", "servingruntimes"),
                                  ("route.openshift.io/v1", "routes")):
        objs += [(plural, o) for o in custom(lab, group_version, plural, NS)]
    return {f"{kind}/{o['metadata']['name']}": json.dumps(
        [o.get("spec"), o.get("data"), o["metadata"].get("labels"),
         o["metadata"].get("annotations")], sort_keys=True) for kind, o in objs}


def test_check_mode_reports_a_change_and_writes_nothing(served):
    lab, work, plan, _res = served
    before = _snapshot(lab)
    changed = _args(plan, extra_vllm_args=["--enforce-eager", "--kv-cache-memory-bytes", "64M",
                                           "--max-num-seqs", "8"])
    rc, res, out = run_module(lab, work, "ray_vllm_cluster", changed, extra=("--check", "--diff"))
    assert rc == 0 and res["changed"] is True, out[-3000:]
    assert _snapshot(lab) == before


def test_a_model_volume_that_is_not_read_write_many_is_refused_before_any_write(served):
    lab, work, plan, _res = served
    core = client.CoreV1Api(api(lab))
    core.create_namespaced_persistent_volume_claim(NS, {
        "metadata": {"name": "models-rwo"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})
    before = _snapshot(lab)
    changed = _args(plan, model_pvc="models-rwo", extra_vllm_args=["--max-num-seqs", "8"])
    rc, res, out = run_module(lab, work, "ray_vllm_cluster", changed)
    assert rc != 0, out[-3000:]
    assert "models-rwo is ReadWriteOnce" in res["msg"] and "ReadWriteMany" in res["msg"]
    assert _snapshot(lab) == before


def test_the_validate_roles_gpu_check_counts_each_inference_services_gpus(served, tmp_path):
    """The validate role unchanged: the head of each InferenceService asks its Ray
    cluster for its GPUs, compared with the limits of the InferenceService's pods."""
    lab, _work, _plan, _res = served
    play = tmp_path / "validate.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                     "roles": ["llmops.gpu_stack.validate"]}]))
    values = tmp_path / "validate-vars.json"
    values.write_text(json.dumps({"gpu_stack_k8s_auth": {"kubeconfig": str(lab.kubeconfig)},
                                  "validate_namespace": NS, "validate_serving_name": NAME,
                                  "validate_report_dir": str(tmp_path / "report")}))
    rc, _tasks, out = run_play(lab, tmp_path, playbook=play,
                               extra=("--tags", "gpu", "-e", f"@{values}"))
    assert rc == 0, out[-3000:]
    assert f"Ray cluster {NAME}-0: 2 GPUs, as given" in out


def test_switching_the_model_to_the_deployment_backend_removes_its_inference_services(served):
    """Last in this module: it replaces what the tests above read."""
    lab, work, _plan, _res = served
    rc, res, out = run_module(lab, work, "serving_plan", {
        "model": {"config_path": str(work / MODEL / "config.json"), "dtype": "float16"},
        "hardware": {"nodes": 1, "gpus_per_node": 1, "gpu_memory_gib": 80}})
    assert rc == 0, out[-2000:]
    rc, res, out = run_module(lab, work, "ray_vllm_cluster",
                              _args(res["plan"], backend="deployment"))
    assert rc == 0, res.get("msg", out[-3000:]) + _state(lab)
    assert custom(lab, "serving.kserve.io/v1beta1", "inferenceservices", NS) == []
    assert custom(lab, "serving.kserve.io/v1alpha1", "servingruntimes", NS) == []
    apps = client.AppsV1Api(api(lab))
    assert apps.read_namespaced_deployment(NAME, NS).status.ready_replicas == 1
    assert not [d.metadata.name for d in apps.list_namespaced_deployment(NS).items
                if d.metadata.name.startswith(f"{NAME}-0-predictor")]
    core = client.CoreV1Api(api(lab))
    data = core.read_namespaced_config_map(f"{NAME}-endpoint", NS).data
    assert data["backend"] == "deployment" and "inference_services" not in data
