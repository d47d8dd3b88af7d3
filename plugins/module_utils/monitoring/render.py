# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The monitoring stage's objects: ``manifests(values) -> [manifest]``, pure.

The monitoring role applies them; the GitOps export renders the same list. ``values``:

- ``namespace`` (required): where the PrometheusRule and the dashboard go.
- ``servers``: the vLLM servers, each ``name``, ``namespace``, ``api_key_secret`` (the
  serving stage's Secret; its ``metrics-key`` opens ``/metrics``; empty: no key),
  ``backend`` (the serving stage's, ``ray`` (default), ``deployment`` or ``kserve``),
  ``selector`` (the serving Service's pod selector; default: what the backend's rendering
  selects, the Ray heads, the Deployment's pods or the InferenceServices' heads),
  ``target_port`` (default ``api``), ``ray`` (default: the backend is ``ray``; its Ray
  metrics are scraped too when ``ray_metrics``; KServe's pods export no Ray metrics port).
  ``server_from_handover`` builds one from the serving stage's hand-over ConfigMap.
- ``gateway``: optional, ``name``, ``namespace``, ``port``, ``scheme``, ``service_labels``,
  ``secret``, ``secret_key`` (see ``monitors.gateway_monitor``).
- ``ray_metrics`` (default true), ``prometheus_namespaces`` (the namespaces Prometheus
  scrapes from, admitted to Ray's metrics port; default OpenShift's user-workload one).
- ``rules`` (default true), ``thresholds`` (``rules.THRESHOLDS``), ``name`` (of the rule and
  the dashboard, default ``llmops-gpu-stack``), ``interval`` (default ``30s``),
  ``monitor_labels`` (added to every monitor and rule: a Prometheus' selectors).
- ``dashboard`` (default true), ``dashboard_namespace`` (default ``namespace``),
  ``dashboard_labels`` (default ``grafana_dashboard: "1"``), ``dashboard_title``.
- ``user_workload_monitoring`` (default false): OpenShift's ``cluster-monitoring-config``
  with ``enableUserWorkload: true``, keeping ``user_workload_config`` (the cluster's
  current ``config.yaml``, when it has one).
"""

from __future__ import annotations

import re

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.monitoring import (
    dashboard,
    monitors,
    rules,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import (
    render_deployment,
    render_kserve,
)

DEFAULT_NAME = "llmops-gpu-stack"
DEFAULT_PROMETHEUS_NAMESPACES = ("openshift-user-workload-monitoring",)
_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$")
_INTERVAL = re.compile(r"^[0-9]+(ms|s|m|h)$")
_KNOWN = {"namespace", "servers", "gateway", "ray_metrics", "prometheus_namespaces", "rules",
          "thresholds", "name", "interval", "monitor_labels", "dashboard",
          "dashboard_namespace", "dashboard_labels", "dashboard_title",
          "user_workload_monitoring", "user_workload_config"}
_SERVER_KEYS = {"name", "namespace", "api_key_secret", "backend", "selector", "target_port",
                "ray"}
# backend -> the pod selector of its serving Service (what its rendering selects)
_SELECTORS = {"ray": monitors.default_selector, "deployment": render_deployment.selector,
              "kserve": render_kserve.head_selector}


def _name(what: str, value) -> str:
    if not isinstance(value, str) or not _DNS.match(value):
        raise InvalidInputError(f"{what}: {value!r} is not a DNS label of at most 53 "
                                "characters (lower case letters, digits, '-')")
    return value


def _server(entry: dict) -> dict:
    if not isinstance(entry, dict):
        raise InvalidInputError(f"servers: {entry!r} is not a mapping")
    unknown = sorted(set(entry) - _SERVER_KEYS)
    if unknown:
        raise InvalidInputError(f"servers: unknown keys {', '.join(unknown)}")
    name = _name("servers[].name", entry.get("name"))
    backend = entry.get("backend") or "ray"
    if backend not in _SELECTORS:
        raise InvalidInputError(f"servers[{name}].backend: {backend!r} is not one of "
                                f"{', '.join(_SELECTORS)}")
    selector = entry.get("selector") or _SELECTORS[backend](name)
    if not isinstance(selector, dict):
        raise InvalidInputError(f"servers[{name}].selector: not a mapping of labels")
    return {"name": name, "namespace": _name(f"servers[{name}].namespace", entry.get("namespace")),
            "api_key_secret": entry.get("api_key_secret") or None, "selector": selector,
            "target_port": entry.get("target_port") or "api",
            "ray": entry["ray"] is not False if "ray" in entry else backend == "ray"}


def server_from_handover(data: dict, selector: dict | None = None) -> dict:
    """A server entry from the serving stage's hand-over ConfigMap's ``data`` (and the
    pod selector of the Service it names, when read from the cluster)."""
    return {"name": data.get("service") or "", "namespace": data.get("namespace") or "",
            "api_key_secret": data.get("api_key_secret") or None,
            "backend": data.get("backend") or "ray", "selector": selector or None,
            "ray": bool(data.get("clusters"))}


def _check(values: dict) -> dict:
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise InvalidInputError(f"monitoring: unknown options {', '.join(unknown)}")
    interval = values.get("interval") or "30s"
    if not _INTERVAL.match(str(interval)):
        raise InvalidInputError(f"monitoring: interval {interval!r} is not a duration "
                                "such as 30s or 1m")
    servers = [_server(s) for s in values.get("servers") or []]
    seen = [(s["namespace"], s["name"]) for s in servers]
    if len(set(seen)) != len(seen):
        raise InvalidInputError("monitoring: a server is listed twice")
    return {"namespace": _name("namespace", values.get("namespace")), "servers": servers,
            "interval": interval, "name": _name("name", values.get("name") or DEFAULT_NAME),
            "labels": dict(values.get("monitor_labels") or {})}


def manifests(values: dict) -> list[dict]:
    """Every object of the monitoring stage, in apply order; input checked first."""
    v = dict(values or {})
    c = _check(v)
    if v.get("gateway"):
        gateway = dict(v["gateway"])
        _name("gateway.name", gateway.get("name"))
        _name("gateway.namespace", gateway.get("namespace"))
    thresholds = rules.thresholds(v.get("thresholds"))  # refused before anything renders
    out = []
    if v.get("user_workload_monitoring"):
        out.append(monitors.user_workload_config(v.get("user_workload_config")))
    for server in c["servers"]:
        out += monitors.vllm_monitor(server, c["interval"], c["labels"])
        if server["ray"] and v.get("ray_metrics", True):
            out += monitors.ray_monitor(server, c["interval"], c["labels"], list(
                v.get("prometheus_namespaces") or DEFAULT_PROMETHEUS_NAMESPACES))
    if v.get("gateway"):
        out += monitors.gateway_monitor(gateway, c["interval"], c["labels"])
    if v.get("rules", True):
        out.append(rules.prometheus_rule(c["name"], c["namespace"], c["servers"], thresholds,
                                         c["labels"]))
    if v.get("dashboard", True):
        labels = v.get("dashboard_labels")
        out.append(dashboard.configmap(
            c["name"], _name("dashboard_namespace", v.get("dashboard_namespace") or c["namespace"]),
            v.get("dashboard_title") or "LLM serving: vLLM and GPUs",
            dict(labels) if labels is not None else {"grafana_dashboard": "1"}))
    return out
