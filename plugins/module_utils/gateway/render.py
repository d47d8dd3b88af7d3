# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Render the gateway's objects: config ConfigMap, Deployment, Service, Route, NetworkPolicy.

``manifests(cfg, text, env, digest) -> list`` renders, for the gateway ``cfg["name"]`` in
``cfg["namespace"]``:

- ConfigMap ``<name>-config``: LiteLLM's config (``config.config_text``), which holds
  no secret (keys and URLs are ``os.environ/`` references);
- Deployment ``<name>``: LiteLLM's proxy (``litellm --config ...``) as a non-root pod
  without privilege escalation or a service-account token, the config mounted
  read-only, the environment of ``config.pod_env`` (API keys and the master key from
  their Secrets), probes on LiteLLM's unauthenticated ``/health/liveliness`` and
  ``/health/readiness``, and the config digest as a pod annotation
  (``CONFIG_SHA256_ANNOTATION``): a changed config, URL or key rolls the pods;
- Service ``<name>`` (the proxy port only) and a TLS edge Route for the path ``/v1``
  only, with a timeout fit for streaming;
- NetworkPolicy ``<name>``: the gateway's pods admit the proxy port only.

``handover(cfg, endpoint, models)``: the ConfigMap ``<name>-endpoint`` recording the
gateway's endpoint, Service, port, master-key Secret and model names for a later stage
(validate).
"""

from __future__ import annotations

import re

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

PORT = 4000
CONFIG_DIR = "/etc/gpu-stack-gateway"
CONFIG_FILE = "config.yaml"
CONFIG_SHA256_ANNOTATION = "gpu-stack.llmops.io/config-sha256"
HANDOVER_COMPONENT = "gateway-handover"
ROUTE_PATH = "/v1"
# LiteLLM loads its model price map from the internet at start unless told not to (a
# gateway in a disconnected cluster must start all the same), and nothing it imports may
# reach the Hugging Face hub (HF_HUB_OFFLINE; the config turns its tokenizer downloads
# off); without a database its admin UI and API docs serve nothing of use and are
# switched off.
_STATIC_ENV = [{"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
               {"name": "HF_HUB_OFFLINE", "value": "1"},
               {"name": "LITELLM_MODE", "value": "PRODUCTION"},
               {"name": "DISABLE_ADMIN_UI", "value": "True"},
               {"name": "NO_DOCS", "value": "True"}, {"name": "NO_REDOC", "value": "True"},
               {"name": "NO_OPENAPI", "value": "True"}]
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_IMAGE = re.compile(r"^[^\s@]+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")
_TIMEOUT = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")
SECURITY = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def validate(cfg: dict) -> None:
    """Refuse what cannot be rendered, before anything is read or written."""
    if not _NAME.match(cfg.get("name") or ""):
        raise InvalidInputError(f"name {cfg.get('name')!r} must be a DNS label of at most 40 "
                                "characters (lower case letters, digits, '-')")
    image = cfg.get("image") or ""
    last = image.rsplit("/", 1)[-1]
    if not _IMAGE.match(image) or (":" not in last and "@" not in last):
        raise InvalidInputError(f"image {image!r} needs a tag or a digest")
    if not isinstance(cfg.get("replicas"), int) or cfg["replicas"] < 1:
        raise InvalidInputError(f"replicas must be at least 1, got {cfg.get('replicas')!r}")
    if not _TIMEOUT.match(str(cfg.get("route_timeout") or "")):
        raise InvalidInputError(f"route_timeout {cfg.get('route_timeout')!r} is not a "
                                "duration such as 600s")
    for key, value in (cfg.get("env") or {}).items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
            raise InvalidInputError(f"env: {key!r} is not an environment variable name")
        if str(key).startswith(("GATEWAY_", "LITELLM_MASTER_KEY")):
            raise InvalidInputError(f"env: {key} is set by the gateway itself")
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidInputError(f"env: {key} must be a plain value")


def labels(cfg: dict) -> dict:
    return {"app.kubernetes.io/name": "llm-gateway", "app.kubernetes.io/instance": cfg["name"],
            "app.kubernetes.io/component": "gateway",
            "app.kubernetes.io/part-of": "llmops-gpu-stack"}


def selector(cfg: dict) -> dict:
    return {"app.kubernetes.io/name": "llm-gateway", "app.kubernetes.io/instance": cfg["name"]}


def config_map_name(name: str) -> str:
    return f"{name}-config"


def handover_name(name: str) -> str:
    return f"{name}-endpoint"


def _container(cfg: dict, env: list[dict]) -> dict:
    extra = [{"name": str(k), "value": str(v)} for k, v in sorted((cfg.get("env") or {}).items())]
    probe = {"httpGet": {"path": "/health/liveliness", "port": PORT}, "periodSeconds": 10,
             "timeoutSeconds": 5, "failureThreshold": 3}
    return {"name": "gateway", "image": cfg["image"], "command": ["litellm"],
            "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--host", "0.0.0.0",
                     "--port", str(PORT), "--num_workers", str(cfg.get("workers") or 1)],
            "env": [*env, *_STATIC_ENV, *extra],
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "resources": cfg.get("resources") or {},
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
            "securityContext": SECURITY,
            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
            "livenessProbe": probe,
            "readinessProbe": {**probe, "httpGet": {"path": "/health/readiness", "port": PORT}}}


def manifests(cfg: dict, text: str, env: list[dict], digest: str) -> list[dict]:
    """The gateway's objects (see the module docstring)."""
    validate(cfg)
    ns, name, own = cfg["namespace"], cfg["name"], labels(cfg)
    meta = {"namespace": ns, "labels": own}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": config_map_name(name), **meta},
                  "data": {CONFIG_FILE: text}}
    pod = {"metadata": {"labels": own, "annotations": {CONFIG_SHA256_ANNOTATION: digest}},
           "spec": {"automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [_container(cfg, env)],
                    "volumes": [{"name": "config",
                                 "configMap": {"name": config_map_name(name)}}]}}
    if cfg.get("node_selector"):
        pod["spec"]["nodeSelector"] = dict(cfg["node_selector"])
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": name, **meta},
                  "spec": {"replicas": cfg["replicas"],
                           "selector": {"matchLabels": selector(cfg)},
                           "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                               "maxUnavailable": 0, "maxSurge": 1}},
                           "template": pod}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **meta},
               "spec": {"selector": selector(cfg),
                        "ports": [{"name": "http", "port": PORT, "targetPort": PORT,
                                   "protocol": "TCP"}]}}
    # the Route carries the OpenAI API alone: LiteLLM's other paths (its route listing,
    # UI assets, admin routes) stay inside the cluster
    route_spec = {"to": {"kind": "Service", "name": name}, "port": {"targetPort": "http"},
                  "path": ROUTE_PATH,
                  "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}}
    if cfg.get("route_host"):
        route_spec["host"] = cfg["route_host"]
    route = {"apiVersion": "route.openshift.io/v1", "kind": "Route",
             "metadata": {"name": name, "namespace": ns, "labels": own, "annotations": {
                 "haproxy.router.openshift.io/timeout": str(cfg["route_timeout"])}},
             "spec": route_spec}
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": name, **meta},
              "spec": {"podSelector": {"matchLabels": selector(cfg)},
                       "policyTypes": ["Ingress"],
                       "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}]}}
    return [config_map, deployment, service, route, policy]


def handover(cfg: dict, endpoint: str | None, models: list[str]) -> dict:
    """The ConfigMap recording the gateway's outputs for later stages."""
    name, ns = cfg["name"], cfg["namespace"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": handover_name(name), "namespace": ns,
                         "labels": {"app.kubernetes.io/instance": name,
                                    "app.kubernetes.io/component": HANDOVER_COMPONENT,
                                    "app.kubernetes.io/part-of": "llmops-gpu-stack"}},
            "data": {"endpoint": endpoint or "", "service": name, "namespace": ns,
                     "port": str(PORT), "master_key_secret": cfg["master_key_secret"],
                     "models": ",".join(sorted(models))}}
