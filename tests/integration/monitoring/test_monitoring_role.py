"""The monitoring role (playbooks/monitoring.yml, run alone) against the shared lab.

The serving stage's outputs are planted as that stage leaves them: its hand-over
ConfigMap ``<name>-endpoint`` (rendered by the serving stage's own ``handover``), its
Service (here with a selector of its own, which the metrics Service must copy) and its
API-key Secret. With no server named the role finds the hand-over by its label. Check
mode writes nothing; a run creates the monitors, the rule and the dashboard (read back
through the API server, not the role's result); a second run changes nothing; a named
server without a hand-over fails before anything is written.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import Request
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    render as serving_render,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from integration.playbook import REPO, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NAME = "tiny"
SELECTOR = {"app.kubernetes.io/instance": NAME, "ray.io/node-type": "head", "replica": "any"}


def _plant_serving(core, ns: str) -> None:
    core.create_namespaced_secret(ns, {"metadata": {"name": f"{NAME}-api-key"}, "stringData": {
        "api-key": "k", "metrics-key": "m"}})
    core.create_namespaced_service(ns, {"metadata": {"name": NAME}, "spec": {
        "selector": SELECTOR, "ports": [{"name": "api", "port": 8000, "targetPort": 8000}]}})
    plan = build_plan({"preset": "llama-3-8b"},
                      {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                      layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
                      topology="head_without_gpus")
    cfg = Request(namespace=ns, name=NAME, plan=plan, image="example.com/ray-vllm:1",
                  served_model_name=NAME, model_dir=NAME).config()
    handover = serving_render.handover(cfg, None, plan, "ray")
    handover["metadata"].pop("namespace")
    core.create_namespaced_config_map(ns, handover)


def _run(lab, tmp_path, ns: str, *extra: str, servers: list | None = None):
    return run_playbook(
        tmp_path, playbook=REPO / "playbooks" / "monitoring.yml", extra=extra,
        vars_file={"monitoring_servers": servers or [], "monitoring_namespace": ns},
        env={"K8S_AUTH_KUBECONFIG": str(lab.kubeconfig), "K8S_AUTH_CONTEXT": "lab-admin"})


def _monitoring(custom, ns: str) -> dict:
    out = {}
    for plural in ("servicemonitors", "podmonitors", "prometheusrules"):
        items = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", ns,
                                                     plural)["items"]
        out[plural] = {i["metadata"]["name"]: i for i in items}
    return out


def test_the_role_applies_the_monitors_rules_and_dashboard_idempotently(
        k8s_lab, k8s_client, k8s_namespace, tmp_path):
    from kubernetes import client

    ns = k8s_namespace
    core, custom = client.CoreV1Api(k8s_client), client.CustomObjectsApi(k8s_client)
    _plant_serving(core, ns)

    check = _run(k8s_lab, tmp_path, ns, "--check")
    assert check.rc == 0, check.output[-3000:]
    assert check.stats["localhost"]["changed"] > 0
    assert _monitoring(custom, ns) == {"servicemonitors": {}, "podmonitors": {},
                                       "prometheusrules": {}}

    first = _run(k8s_lab, tmp_path, ns)
    assert first.rc == 0, first.output[-3000:]
    assert first.stats["localhost"]["changed"] > 0
    found = _monitoring(custom, ns)
    endpoint = found["servicemonitors"][NAME]["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {
        "name": f"{NAME}-api-key", "key": "metrics-key"}}
    metrics = core.read_namespaced_service(f"{NAME}-metrics", ns)
    assert metrics.spec.selector == SELECTOR  # the serving Service's own selector
    assert metrics.spec.cluster_ip == "None"
    assert set(found["podmonitors"]) == {f"{NAME}-ray"}
    alerts = {r["alert"] for g in found["prometheusrules"]["llmops-gpu-stack"]["spec"]["groups"]
              for r in g["rules"]}
    assert {"VllmKvCacheNearlyFull", "GpuFallenOffTheBus", "ServingPodRestarting"} <= alerts
    board = core.read_namespaced_config_map("llmops-gpu-stack", ns)
    assert board.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(board.data["llmops-gpu-stack.json"])["panels"]

    again = _run(k8s_lab, tmp_path, ns)
    assert again.rc == 0, again.output[-3000:]
    assert again.stats["localhost"]["changed"] == 0, again.output[-3000:]


def test_a_server_without_a_handover_fails_before_anything_is_written(
        k8s_lab, k8s_client, k8s_namespace, tmp_path):
    from kubernetes import client

    ns = k8s_namespace
    run = _run(k8s_lab, tmp_path, ns, servers=[{"name": "nothing", "namespace": ns}])
    assert run.rc != 0
    assert "No hand-over ConfigMap for nothing" in run.output, run.output[-3000:]
    custom = client.CustomObjectsApi(k8s_client)
    assert _monitoring(custom, ns)["prometheusrules"] == {}
    assert client.CoreV1Api(k8s_client).list_namespaced_config_map(ns).items == [] or all(
        c.metadata.name == "kube-root-ca.crt"
        for c in client.CoreV1Api(k8s_client).list_namespaced_config_map(ns).items)
