# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""What Prometheus scrapes: one ServiceMonitor per vLLM server, the gateway's, Ray's.

- vLLM: the serving Service carries no labels a ServiceMonitor could select, so each
  server gets a headless ``<name>-metrics`` Service (labelled, same pod selector as the
  serving Service, port ``metrics`` to the pods' ``api`` port) and a ServiceMonitor
  selecting it. vLLM answers ``GET /metrics`` on its API port with the API-key Secret's
  ``metrics-key`` (the launcher's key check): the endpoint's ``authorization`` names that
  Secret and key, never the value.
- The gateway (when given): a ServiceMonitor selecting its Service by the labels given,
  with a Secret reference when its ``/metrics`` needs a key.
- Ray (KubeRay's nodes export on their ``metrics`` port, 8080): a PodMonitor over the
  release's Ray pods, and a NetworkPolicy opening that port alone to the namespaces of
  Prometheus (the serving policies keep every Ray port private to its RayCluster).
- OpenShift: the ``cluster-monitoring-config`` ConfigMap with ``enableUserWorkload``, so
  the monitors of user namespaces are scraped at all.
"""

from __future__ import annotations

try:
    import yaml
except ImportError:  # pragma: no cover - the controller (ansible-core) always has PyYAML
    yaml = None

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

PART_OF = {"app.kubernetes.io/part-of": "llmops-gpu-stack"}
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
METRICS_COMPONENT = "vllm-metrics"
METRICS_SUFFIX = "-metrics"
METRICS_PATH = "/metrics"
METRICS_KEY = "metrics-key"  # the serving stage's API-key Secret key for GET /metrics
RAY_METRICS_PORT = 8080
USER_WORKLOAD_NAMESPACE = "openshift-monitoring"
USER_WORKLOAD_CONFIGMAP = "cluster-monitoring-config"


def default_selector(name: str) -> dict:
    """The serving Service's pod selector for a Ray release: its heads."""
    return {INSTANCE: name, "ray.io/node-type": "head"}


def _meta(name: str, namespace: str, labels: dict, extra: dict | None = None) -> dict:
    return {"name": name, "namespace": namespace,
            "labels": {**PART_OF, **labels, **(extra or {})}}


def _authorization(secret: str | None, key: str) -> dict:
    if not secret:
        return {}
    return {"authorization": {"type": "Bearer", "credentials": {"name": secret, "key": key}}}


def _endpoint(port: str, interval: str, scheme: str, secret: str | None, key: str) -> dict:
    return {"port": port, "path": METRICS_PATH, "scheme": scheme, "interval": interval,
            **_authorization(secret, key)}


def vllm_monitor(server: dict, interval: str, labels: dict) -> list[dict]:
    """The metrics Service and the ServiceMonitor of one vLLM server.

    ``server``: ``name``, ``namespace``, ``api_key_secret`` (empty: an open ``/metrics``),
    ``selector`` (the serving Service's pod selector) and ``target_port`` (the pods' API
    port, by name or number).
    """
    name, ns = server["name"], server["namespace"]
    own = {INSTANCE: name, COMPONENT: METRICS_COMPONENT}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": _meta(f"{name}{METRICS_SUFFIX}", ns, own),
               "spec": {"clusterIP": "None", "selector": dict(server["selector"]),
                        "ports": [{"name": "metrics", "port": 8000, "protocol": "TCP",
                                   "targetPort": server["target_port"]}]}}
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": _meta(name, ns, own, labels),
               "spec": {"selector": {"matchLabels": own},
                        "namespaceSelector": {"matchNames": [ns]},
                        "endpoints": [_endpoint("metrics", interval, "http",
                                                server.get("api_key_secret"), METRICS_KEY)]}}
    return [service, monitor]


def gateway_monitor(gateway: dict, interval: str, labels: dict) -> list[dict]:
    """The gateway's ServiceMonitor: its Service selected by ``gateway['service_labels']``
    (default: ``app.kubernetes.io/instance: <name>``), port ``gateway['port']``."""
    name, ns = gateway["name"], gateway["namespace"]
    match = dict(gateway.get("service_labels") or {INSTANCE: name})
    endpoint = _endpoint(gateway.get("port") or "http", interval, gateway.get("scheme") or "http",
                         gateway.get("secret"), gateway.get("secret_key") or METRICS_KEY)
    return [{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
             "metadata": _meta(name, ns, {INSTANCE: name, COMPONENT: "gateway-metrics"}, labels),
             "spec": {"selector": {"matchLabels": match},
                      "namespaceSelector": {"matchNames": [ns]},
                      "endpoints": [endpoint]}}]


def ray_monitor(server: dict, interval: str, labels: dict,
                prometheus_namespaces: list) -> list[dict]:
    """The PodMonitor over one release's Ray pods (port ``metrics``) and the policy
    opening that port, alone, to Prometheus' namespaces."""
    name, ns = server["name"], server["namespace"]
    pods = {INSTANCE: name, "ray.io/is-ray-node": "yes"}
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
               "metadata": _meta(f"{name}-ray", ns, {INSTANCE: name, COMPONENT: "ray-metrics"},
                                 labels),
               "spec": {"selector": {"matchLabels": pods},
                        "namespaceSelector": {"matchNames": [ns]},
                        "podMetricsEndpoints": [{"port": "metrics", "path": METRICS_PATH,
                                                 "interval": interval}]}}
    sources = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}}
               for n in prometheus_namespaces]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": _meta(f"{name}-ray-metrics", ns, {INSTANCE: name}),
              "spec": {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": sources,
                                    "ports": [{"port": RAY_METRICS_PORT, "protocol": "TCP"}]}]}}
    return [monitor, policy]


def user_workload_config(current: str | None) -> dict:
    """OpenShift's ``cluster-monitoring-config`` with ``enableUserWorkload: true``.

    The ConfigMap holds one YAML document (``config.yaml``) that a write replaces whole,
    so ``current`` (the cluster's document, empty when there is none) is kept and only
    ``enableUserWorkload`` is set in it.
    """
    if yaml is None:  # pragma: no cover
        raise InvalidInputError("user-workload monitoring needs PyYAML to merge config.yaml")
    doc = yaml.safe_load(current or "") or {}
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{USER_WORKLOAD_NAMESPACE}/{USER_WORKLOAD_CONFIGMAP}: "
                                "config.yaml is not a YAML mapping")
    doc["enableUserWorkload"] = True
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": USER_WORKLOAD_CONFIGMAP, "namespace": USER_WORKLOAD_NAMESPACE},
            "data": {"config.yaml": yaml.safe_dump(doc, default_flow_style=False)}}
