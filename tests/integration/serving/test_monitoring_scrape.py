"""A real Prometheus scrapes the session's vLLM through the monitoring stage's
ServiceMonitor, as the Prometheus Operator would configure it.

In a fresh namespace of the shared lab: the serving stage's API-key Secret (``api-key``,
``metrics-key``) and a head pod (labelled as KubeRay labels a head, API port ``api``)
relaying to the session's vLLM (``served_model``); the monitoring stage's objects
(``monitoring.render.manifests``) applied through the collection's apply path (server-side
apply, strict validation against the upstream Prometheus Operator CRDs). The ServiceMonitor
is then read back from the API server and turned into a scrape job (its Services, port,
pods, scheme, path and Bearer credential from the Secret it references: ``prometheus.py``);
Debian's ``prometheus`` scrapes it, and its HTTP API must show the target up and vLLM's
request and token counters with the values vLLM itself reports. The same job with a wrong
credential is down with 401, so the key is what opens ``/metrics``.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import render
from integration.lab.waiting import wait_for
from integration.monitoring.prometheus import BINARY, Prometheus, scrape_job
from routed import _RELAY as RELAY
from routed import IMAGE

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(BINARY is None, reason="Debian's prometheus is not installed")]

NAME = "tiny"
COUNTERS = ("vllm:request_success_total", "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _head_pod(core, ns: str, upstream: str, work) -> None:
    """A pod standing for the release's Ray head: a relay to the session's vLLM."""
    port = _free_port()
    (work / "refuse").write_text("0")
    core.create_namespaced_pod(ns, {
        "metadata": {"name": f"{NAME}-0-head-x", "labels": {
            "app.kubernetes.io/instance": NAME, "ray.io/node-type": "head"}},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "ray-head", "image": IMAGE, "command": ["python", "-c", RELAY],
            "args": ["0.0.0.0", str(port), upstream, str(work / "arrivals.jsonl"),
                     str(work / "refuse")],
            "ports": [{"name": "api", "containerPort": port}]}]}})

    def ready() -> bool:
        pod = core.read_namespaced_pod(f"{NAME}-0-head-x", ns)
        return any(c.type == "Ready" and c.status == "True"
                   for c in pod.status.conditions or [])

    wait_for(ready, "the head pod Ready", timeout=60, interval=0.2)


def _vllm_counters(served_model) -> dict:
    """vLLM's own counters, read with the metrics key (summed over their labels)."""
    request = urllib.request.Request(
        served_model.base_url.removesuffix("/v1") + "/metrics",
        headers={"Authorization": f"Bearer {served_model.metrics_key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    out = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        for name in COUNTERS:
            if line.startswith((name + "{", name + " ")):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _complete(served_model) -> None:
    import json

    body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 4}).encode()
    request = urllib.request.Request(f"{served_model.base_url}/completions", data=body, headers={
        "Authorization": f"Bearer {served_model.api_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def test_prometheus_scrapes_vllm_with_the_service_monitors_settings(
        served_model, k8s_lab, k8s_client, k8s_namespace, tmp_path):
    from kubernetes import client

    ns, started = k8s_namespace, time.monotonic()
    core, custom = client.CoreV1Api(k8s_client), client.CustomObjectsApi(k8s_client)
    core.create_namespaced_secret(ns, {"metadata": {"name": f"{NAME}-api-key"}, "stringData": {
        "api-key": served_model.api_key, "metrics-key": served_model.metrics_key}})
    upstream = served_model.base_url.removeprefix("http://").removesuffix("/v1")
    _head_pod(core, ns, upstream, tmp_path)

    k8s = K8sClient.from_params({"kubeconfig": k8s_lab.kubeconfig, "context": "lab-admin"})
    objects = render.manifests({"namespace": ns, "servers": [
        {"name": NAME, "namespace": ns, "api_key_secret": f"{NAME}-api-key"}]})
    for obj in objects:
        assert k8s.apply(obj, check_mode=False).changed, obj["kind"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("ServiceMonitor", NAME), ("PrometheusRule", "llmops-gpu-stack"),
            ("ConfigMap", "llmops-gpu-stack"), ("PodMonitor", f"{NAME}-ray")} <= kinds
    # strict validation against the upstream CRD: a misspelt endpoint field is refused
    wrong = next(o for o in objects if o["kind"] == "ServiceMonitor")
    wrong = {**wrong, "spec": {**wrong["spec"], "endpoints": [
        {**wrong["spec"]["endpoints"][0], "bearerToken": {"name": "x"}}]}}
    with pytest.raises(InvalidInputError, match="bearerToken"):
        k8s.apply(wrong, check_mode=True)

    job = scrape_job(core, custom, ns, NAME, tmp_path)
    assert served_model.metrics_key not in str(job)
    assert job["metrics_path"] == "/metrics" and job["scheme"] == "http"
    assert len(job["static_configs"]) == 1, job
    bad_key = tmp_path / "wrong-key"
    bad_key.write_text("not-the-metrics-key")
    wrong_job = {**job, "job_name": "wrong-key",
                 "authorization": {"type": "Bearer", "credentials_file": str(bad_key)}}
    _complete(served_model)

    prometheus = Prometheus([job, wrong_job], tmp_path)
    try:
        def scraped() -> dict | None:
            found = {name: prometheus.query(f'sum({name}{{job="{job["job_name"]}"}})')
                     for name in COUNTERS}
            if all(found.values()) and float(found[COUNTERS[0]][0]["value"][1]) > 0:
                return {k: float(v[0]["value"][1]) for k, v in found.items()}
            return None

        got = wait_for(scraped, "vLLM's counters in Prometheus", timeout=30, interval=0.5)
        up = prometheus.query(f'up{{job="{job["job_name"]}"}}')
        assert [r["value"][1] for r in up] == ["1"]
        assert up[0]["metric"]["service"] == f"{NAME}-metrics"
        # Prometheus has what vLLM reports (nothing was sent since the completion)
        assert got == _vllm_counters(served_model), got
        assert got["vllm:generation_tokens_total"] > 0 and got["vllm:prompt_tokens_total"] > 0

        def wrong_scraped() -> list:
            targets = prometheus.api("targets")["activeTargets"]
            return [t for t in targets if t["labels"]["job"] == "wrong-key"
                    and t["health"] == "down"]

        down = wait_for(wrong_scraped, "the wrong key's target down", timeout=20, interval=0.5)
        assert "401" in down[0]["lastError"], down[0]
    finally:
        prometheus.stop()
    print(f"\nmonitoring scrape test: {time.monotonic() - started:.1f} s")
