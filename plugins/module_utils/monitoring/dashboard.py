# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The Grafana dashboard, as a ConfigMap a Grafana sidecar (label ``grafana_dashboard``)
or the Grafana operator (a GrafanaDashboard with ``configMapRef``) picks up.

Panels: tokens/s (generated and prompt), time to first token and inter-token latency
percentiles, queue depth (waiting, running), KV-cache use, GPU utilisation and GPU memory
per node. ``$model`` filters vLLM's panels by served model name, ``$node`` the GPU panels.
"""

from __future__ import annotations

import json

DASHBOARD_FILE = "llmops-gpu-stack.json"
UID = "llmops-gpu-stack"
_DS = {"type": "prometheus", "uid": "${datasource}"}
_QUANTILES = (0.5, 0.95, 0.99)


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(pid: int, title: str, unit: str, targets: list, x: int, y: int,
           maximum: float | None = None) -> dict:
    defaults = {"unit": unit}
    if maximum is not None:
        defaults.update({"min": 0, "max": maximum})
    refs = "ABCDEFGH"
    return {"id": pid, "type": "timeseries", "title": title, "datasource": _DS,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [_target(e, legend, refs[i]) for i, (e, legend) in enumerate(targets)]}


def _quantiles(metric: str, sel: str) -> list:
    return [(f"histogram_quantile({q}, sum by (le, model_name) "
             f"(rate({metric}_bucket{{{sel}}}[$__rate_interval])))",
             f"p{int(q * 100)} {{{{model_name}}}}") for q in _QUANTILES]


def dashboard(title: str) -> dict:
    """The dashboard's JSON model."""
    sel = 'model_name=~"$model"'
    node = 'Hostname=~"$node"'
    panels = [
        _panel(1, "Tokens per second", "short", [
            (f"sum by (model_name) (rate(vllm:generation_tokens_total{{{sel}}}[$__rate_interval]))",
             "generated {{model_name}}"),
            (f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{sel}}}[$__rate_interval]))",
             "prompt {{model_name}}")], 0, 0),
        _panel(2, "Requests per second", "reqps", [
            (f"sum by (model_name, finished_reason) "
             f"(rate(vllm:request_success_total{{{sel}}}[$__rate_interval]))",
             "{{model_name}} {{finished_reason}}")], 12, 0),
        _panel(3, "Time to first token", "s",
               _quantiles("vllm:time_to_first_token_seconds", sel), 0, 8),
        _panel(4, "Inter-token latency", "s",
               _quantiles("vllm:inter_token_latency_seconds", sel), 12, 8),
        _panel(5, "Queue depth", "short", [
            (f"sum by (model_name) (vllm:num_requests_waiting{{{sel}}})",
             "waiting {{model_name}}"),
            (f"sum by (model_name) (vllm:num_requests_running{{{sel}}})",
             "running {{model_name}}")],
            0, 16),
        _panel(6, "KV-cache use", "percentunit", [
            (f"max by (model_name, pod) (vllm:kv_cache_usage_perc{{{sel}}})",
             "{{model_name}} {{pod}}")], 12, 16, maximum=1),
        _panel(7, "GPU utilisation per node", "percent", [
            (f"avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL{{{node}}})", "{{Hostname}}")],
            0, 24, maximum=100),
        _panel(8, "GPU memory used per node", "decmbytes", [
            (f"sum by (Hostname) (DCGM_FI_DEV_FB_USED{{{node}}})", "used {{Hostname}}"),
            (f"sum by (Hostname) (DCGM_FI_DEV_FB_USED{{{node}}} + DCGM_FI_DEV_FB_FREE{{{node}}})",
             "total {{Hostname}}")], 12, 24),
    ]
    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus",
         "label": "Data source"},
        {"name": "model", "type": "query", "label": "Model", "datasource": _DS,
         "query": {"query": "label_values(vllm:num_requests_running, model_name)",
                   "refId": "model"},
         "definition": "label_values(vllm:num_requests_running, model_name)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
        {"name": "node", "type": "query", "label": "Node", "datasource": _DS,
         "query": {"query": "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)", "refId": "node"},
         "definition": "label_values(DCGM_FI_DEV_GPU_UTIL, Hostname)",
         "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2},
    ]
    return {"uid": UID, "title": title, "tags": ["llmops-gpu-stack", "vllm", "gpu"],
            "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
            "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": variables}, "panels": panels}


def configmap(name: str, namespace: str, title: str, labels: dict) -> dict:
    """The dashboard as a ConfigMap (``labels`` select it for the sidecar)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "llmops-gpu-stack", **labels}},
            "data": {DASHBOARD_FILE: json.dumps(dashboard(title), indent=1, sort_keys=True)}}
