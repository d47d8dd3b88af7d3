"""monitoring.render: what Prometheus scrapes, checked against the serving stage's own
rendering (its Service's selector, its pods' API port, its hand-over), the installed vLLM's
metric names, and bad input refused before anything renders."""

from __future__ import annotations

import copy
import json
import pathlib
import re

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.serving_runner import Request
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import (
    monitors,
    render,
    rules,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    render as serving_render,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render_deployment
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

ROOT = pathlib.Path(__file__).resolve().parents[5]
NS = "llm"
PLAN = build_plan({"preset": "llama-3-8b"}, {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
                  topology="head_without_gpus")


def _serving(backend: str) -> tuple[list[dict], dict]:
    """The serving stage's objects and hand-over for ``backend``."""
    req = Request(namespace=NS, name="llm", plan=copy.deepcopy(PLAN),
                  image="registry.example.com/llmops/ray-vllm:0.1.0",
                  served_model_name="tiny-llama", model_dir="tiny-llama", model_pvc="models",
                  api_key_secret="llm-api-key")
    cfg = req.config()
    objs = render_deployment.render_manifests(backend, PLAN, cfg)
    return objs, serving_render.handover(cfg, None, PLAN, backend)


def _by(objs: list, kind: str, name: str | None = None) -> dict:
    return next(o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"]))


def _pod_templates(objs: list) -> list[dict]:
    out = []
    for obj in objs:
        if obj["kind"] == "RayCluster":
            out.append(obj["spec"]["headGroupSpec"]["template"])
        elif obj["kind"] == "Deployment":
            out.append(obj["spec"]["template"])
        elif obj["kind"] == "ServingRuntime":  # KServe's head pods: the runtime's labels
            out.append({"metadata": {"labels": obj["spec"]["labels"]},
                        "spec": {"containers": obj["spec"]["containers"]}})
    return out


@pytest.mark.parametrize("backend", ["ray", "deployment", "kserve"])
def test_the_metrics_service_reaches_the_serving_pods_api_port(backend):
    serving, handover = _serving(backend)
    server = render.server_from_handover(handover["data"])
    objs = render.manifests({"namespace": NS, "servers": [server]})
    metrics = _by(objs, "Service", "llm-metrics")
    assert metrics["spec"]["selector"] == _by(serving, "Service", "llm")["spec"]["selector"]
    target = metrics["spec"]["ports"][0]["targetPort"]
    # every pod the selector picks has a container port of that name (vLLM's API port)
    picked = [t for t in _pod_templates(serving)
              if metrics["spec"]["selector"].items() <= {
                  **t["metadata"]["labels"], "ray.io/node-type": "head"}.items()]
    assert picked
    for template in picked:
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"]
                 for p in c.get("ports", [])}
        assert ports[target] == serving_render.API_PORT
    monitor = _by(objs, "ServiceMonitor", "llm")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"][
        "labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"]
    # Ray's own metrics only where Ray runs
    assert any(o["kind"] == "PodMonitor" for o in objs) == (backend == "ray")


def test_the_credential_is_the_serving_secrets_metrics_key_by_reference():
    _serving_objs, handover = _serving("ray")
    objs = render.manifests({"namespace": NS, "servers": [
        render.server_from_handover(handover["data"])]})
    endpoint = _by(objs, "ServiceMonitor", "llm")["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {
        "name": "llm-api-key", "key": serving_render.METRICS_KEY_FILE}}
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "http"
    assert not [o for o in objs if o["kind"] == "Secret"]
    # no key: no authorization at all (an open /metrics)
    open_objs = render.manifests({"namespace": NS, "servers": [{"name": "x", "namespace": NS}]})
    assert "authorization" not in _by(open_objs, "ServiceMonitor", "x")["spec"]["endpoints"][0]


def test_ray_metrics_open_port_8080_alone_to_prometheus():
    objs = render.manifests({"namespace": NS, "servers": [{"name": "llm", "namespace": NS}],
                             "prometheus_namespaces": ["monitoring"]})
    policy = _by(objs, "NetworkPolicy", "llm-ray-metrics")
    assert policy["spec"]["ingress"] == [{
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"port": monitors.RAY_METRICS_PORT, "protocol": "TCP"}]}]
    assert policy["spec"]["podSelector"] == _by(objs, "PodMonitor")["spec"]["selector"]
    off = render.manifests({"namespace": NS, "servers": [{"name": "llm", "namespace": NS}],
                            "ray_metrics": False})
    assert not [o for o in off if o["kind"] in ("PodMonitor", "NetworkPolicy")]


def test_the_gateway_gets_a_monitor_only_when_given():
    base = {"namespace": NS, "servers": []}
    assert not [o for o in render.manifests(base) if o["kind"] == "ServiceMonitor"]
    objs = render.manifests({**base, "gateway": {
        "name": "gateway", "namespace": "gw", "port": "http", "secret": "gateway-keys",
        "secret_key": "metrics", "service_labels": {"app": "litellm"}}})
    monitor = _by(objs, "ServiceMonitor", "gateway")
    assert monitor["metadata"]["namespace"] == "gw"
    assert monitor["spec"]["selector"] == {"matchLabels": {"app": "litellm"}}
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "gateway-keys", "key": "metrics"}


def test_user_workload_monitoring_keeps_the_rest_of_the_config():
    current = "prometheusK8s:\n  retention: 7d\nenableUserWorkload: false\n"
    objs = render.manifests({"namespace": NS, "user_workload_monitoring": True,
                             "user_workload_config": current})
    config = _by(objs, "ConfigMap", monitors.USER_WORKLOAD_CONFIGMAP)
    assert config["metadata"]["namespace"] == "openshift-monitoring"
    assert yaml.safe_load(config["data"]["config.yaml"]) == {
        "prometheusK8s": {"retention": "7d"}, "enableUserWorkload": True}
    assert not [o for o in render.manifests({"namespace": NS})
                if o["metadata"]["name"] == monitors.USER_WORKLOAD_CONFIGMAP]
    with pytest.raises(InvalidInputError, match="not a YAML mapping"):
        render.manifests({"namespace": NS, "user_workload_monitoring": True,
                          "user_workload_config": "- a list"})


@pytest.mark.parametrize(("values", "message"), [
    ({"namespace": NS, "colour": 1}, "unknown options colour"),
    ({"namespace": "Bad_NS"}, "namespace"),
    ({"namespace": NS, "interval": "often"}, "interval"),
    ({"namespace": NS, "thresholds": {"kv_cache": 0.9}}, "unknown alert thresholds: kv_cache"),
    ({"namespace": NS, "thresholds": {"kv_cache_usage": 1.5}}, "outside"),
    ({"namespace": NS, "thresholds": {"error_rate": True}}, "not a number"),
    ({"namespace": NS, "servers": [{"name": "a", "namespace": NS}] * 2}, "listed twice"),
    ({"namespace": NS, "servers": [{"name": "a", "namespace": NS, "backend": "knative"}]},
     "backend"),
    ({"namespace": NS, "servers": [{"name": "a", "namespace": NS, "port": 1}]},
     "unknown keys port"),
    ({"namespace": NS, "gateway": {"name": "", "namespace": NS, "port": "http"}},
     "gateway.name"),
])
def test_bad_input_is_refused(values, message):
    with pytest.raises(InvalidInputError, match=message):
        render.manifests(values)


def _vllm_metric_names() -> set[str]:
    loggers = pathlib.Path(ROOT / ".venv").glob(
        "lib/python*/site-packages/vllm/v1/metrics/loggers.py")
    found = next(iter(loggers), None)
    if found is None:
        pytest.skip("vLLM is not installed in .venv")
    return set(re.findall(r'"(vllm:[a-z_:]+)"', found.read_text()))


def _used(text: str, prefix: str) -> set[str]:
    return {m.removesuffix("_bucket").removesuffix("_total")
            for m in re.findall(rf"\b({prefix}[A-Za-z_:]+)", text)}


DCGM_DEFAULT_COUNTERS = {  # dcgm-exporter's default-counters.csv (the names used here)
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_XID_ERRORS"}


def test_rules_and_dashboard_use_the_installed_vllms_metric_names():
    objs = render.manifests({"namespace": NS, "servers": [{"name": "llm", "namespace": NS}]})
    text = json.dumps(_by(objs, "PrometheusRule")["spec"]) + json.dumps(
        _by(objs, "ConfigMap", "llmops-gpu-stack")["data"])
    vllm_used = _used(text, "vllm:")
    assert {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
            "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
            "vllm:generation_tokens"} <= vllm_used
    assert vllm_used <= _vllm_metric_names()
    assert _used(text, "DCGM_") <= DCGM_DEFAULT_COUNTERS


def test_every_alert_has_a_runbook_and_a_severity():
    objs = render.manifests({"namespace": NS, "servers": [{"name": "llm", "namespace": NS}]})
    alerts = [r for g in _by(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == 11
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert set(alert["annotations"]) == {"summary", "description", "runbook"}
        assert len(alert["annotations"]["runbook"]) > 80, alert["alert"]
    # no server: the GPU alerts alone
    gpu_only = render.manifests({"namespace": NS})
    assert [g["name"] for g in _by(gpu_only, "PrometheusRule")["spec"]["groups"]] == [
        "llmops-gpu-stack.gpu"]


def test_the_dashboard_configmap_carries_the_panels_for_the_sidecar():
    objs = render.manifests({"namespace": NS, "dashboard_namespace": "grafana"})
    board = _by(objs, "ConfigMap", "llmops-gpu-stack")
    assert board["metadata"]["namespace"] == "grafana"
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    model = json.loads(board["data"]["llmops-gpu-stack.json"])
    titles = {p["title"] for p in model["panels"]}
    assert {"Tokens per second", "Time to first token", "Inter-token latency", "Queue depth",
            "KV-cache use", "GPU utilisation per node", "GPU memory used per node"} <= titles
    ttft = next(p for p in model["panels"] if p["title"] == "Time to first token")
    assert [t["expr"].split(",")[0] for t in ttft["targets"]] == [
        "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"]
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
    assert not [o for o in render.manifests({"namespace": NS, "dashboard": False})
                if o["kind"] == "ConfigMap"]


def test_the_roles_threshold_defaults_are_the_renderings():
    spec = yaml.safe_load((ROOT / "roles/monitoring/meta/argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]["monitoring_thresholds"]["options"]
    assert {k: v["default"] for k, v in options.items()} == {
        k: v[0] for k, v in rules.THRESHOLDS.items()}
