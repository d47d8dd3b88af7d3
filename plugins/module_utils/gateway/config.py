# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The LiteLLM proxy's configuration, generated from the served models (pure).

API
---
``backend(handover) -> dict``
    One served model, read from the serving stage's hand-over ConfigMap
    ``<name>-endpoint`` (``serving.render.handover``): its served name, the Secret
    holding its API key, and one in-cluster URL per replica Service. The replicas'
    Services are, in this order of preference: the hand-over's ``replica_services``
    (comma separated ``service`` or ``service:port``), KubeRay's head Service of each
    RayCluster in ``clusters`` (``<cluster>-head-svc``, which carries the head's API
    port), else the model's one ``service``.
``litellm_config(backends, settings) -> dict``
    LiteLLM's proxy config: one ``model_list`` entry per replica Service, all replicas
    of a model under the same ``model_name`` (LiteLLM's router balances over them and
    retries on another one), the master key, retries and timeouts. Nothing secret is
    written in it: every URL and key is an ``os.environ/<VAR>`` reference to the pod's
    environment.
``pod_env(backends, master_key_secret) -> list``
    The container environment those references name: each URL as a value, each API key
    and the master key as a ``secretKeyRef``.
``config_text(config) -> str``
    The config as the ConfigMap stores it (JSON, which is YAML; sorted, stable).
``config_digest(text, env, key_digests) -> str``
    SHA-256 over the config, the environment and the keys' digests: the Deployment's pod
    annotation, so any change of them rolls the gateway's pods.

Errors are ``InvalidInputError`` with the hand-over's name.
"""

from __future__ import annotations

import hashlib
import json
import re

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)

API_PORT = 8000  # the serving stage's API port (serving.render.API_PORT)
API_KEY_FIELD = "api-key"  # the serving stage's Secret key holding the API key
MASTER_KEY_ENV = contract.GATEWAY_MASTER_KEY_ENV
MASTER_KEY_FIELD = "master-key"
# LiteLLM keys are bearer tokens starting "sk-"; the proxy refuses other master keys.
MASTER_KEY_PREFIX = "sk-"
OPEN_BACKEND_KEY = "no-key"  # an open backend (no API-key Secret) still needs a value
_SERVICE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(:[0-9]{1,5})?$")
_NEEDED = ("served_model_name", "namespace")

DEFAULT_SETTINGS = {
    "num_retries": 2,          # a failed request is retried, on another replica when healthy
    "request_timeout": 600,    # seconds; a long generation or a slow stream
    "allowed_fails": 3,        # failures within a minute before a replica cools down
    "cooldown_time": 30,       # seconds a failing replica is left out
    "routing_strategy": "simple-shuffle",
}


def _env_name(prefix: str, name: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"


def _services(data: dict, where: str) -> list[tuple[str, int]]:
    listed = [s.strip() for s in (data.get("replica_services") or "").split(",") if s.strip()]
    if not listed:
        clusters = [c.strip() for c in (data.get("clusters") or "").split(",") if c.strip()]
        listed = [f"{c}-head-svc" for c in clusters] or [data.get("service") or ""]
    out = []
    for item in listed:
        if not _SERVICE.match(item):
            raise InvalidInputError(f"{where}: {item!r} is not a Service name (or name:port)")
        name, _sep, port = item.partition(":")
        out.append((name, int(port) if port else API_PORT))
    return out


def backend(handover: dict) -> dict:
    """A served model from its hand-over ConfigMap (see the module docstring)."""
    meta = handover.get("metadata") or {}
    where = f"hand-over ConfigMap {meta.get('namespace')}/{meta.get('name')}"
    data = handover.get("data") or {}
    missing = [k for k in _NEEDED if not data.get(k)]
    if missing:
        raise InvalidInputError(f"{where} lacks {', '.join(missing)}: rerun the serving stage")
    ns, served = data["namespace"], data["served_model_name"]
    urls = [{"service": svc, "url": f"http://{svc}.{ns}.svc:{port}/v1",
             "env": _env_name("GATEWAY_BACKEND", svc)}
            for svc, port in _services(data, where)]
    secret = data.get("api_key_secret") or ""
    return {"name": data.get("service") or meta.get("name", ""), "namespace": ns,
            "served_model_name": served, "api_key_secret": secret,
            "key_env": _env_name("GATEWAY_KEY", secret) if secret else None,
            "replicas": urls}


def _check_unique(backends: list[dict]) -> None:
    seen: dict = {}
    for b in backends:
        other = seen.setdefault(b["served_model_name"], b["name"])
        if other != b["name"]:
            raise InvalidInputError(
                f"two served models answer to the model name {b['served_model_name']!r} "
                f"({other} and {b['name']}): the gateway routes by that name, give each "
                "model its own served name")


def litellm_config(backends: list[dict], settings: dict | None = None) -> dict:
    """LiteLLM's proxy configuration for ``backends`` (see the module docstring)."""
    if not backends:
        raise InvalidInputError("the gateway needs at least one served model")
    _check_unique(backends)
    opts = {**DEFAULT_SETTINGS, **(settings or {})}
    models = []
    for b in sorted(backends, key=lambda b: b["served_model_name"]):
        key = f"os.environ/{b['key_env']}" if b["key_env"] else OPEN_BACKEND_KEY
        for replica in b["replicas"]:
            models.append({
                "model_name": b["served_model_name"],
                "litellm_params": {
                    # vLLM speaks the OpenAI API: LiteLLM's OpenAI-compatible provider,
                    # the backend's own model name after the prefix
                    "model": f"openai/{b['served_model_name']}",
                    "api_base": f"os.environ/{replica['env']}",
                    "api_key": key,
                    "timeout": opts["request_timeout"],
                    "stream_timeout": opts["request_timeout"],
                },
                "model_info": {"id": f"{b['name']}/{replica['service']}"},
            })
    return {
        "model_list": models,
        "router_settings": {
            "routing_strategy": opts["routing_strategy"],
            "num_retries": opts["num_retries"],
            "retry_after": 0,
            "allowed_fails": opts["allowed_fails"],
            "cooldown_time": opts["cooldown_time"],
            "timeout": opts["request_timeout"],
        },
        "litellm_settings": {
            "num_retries": opts["num_retries"],
            "request_timeout": opts["request_timeout"],
            "drop_params": False,
            "telemetry": False,
            # LiteLLM counts tokens with a Hugging Face tokenizer it downloads for model
            # names it knows ("llama-3..."); a gateway without the internet would try the
            # hub on requests (where name resolution hangs, requests stalled for
            # seconds): tiktoken's estimate, shipped with LiteLLM, instead
            "disable_hf_tokenizer_download": True,
        },
        # the image's key check: the master key or 401 (LiteLLM alone, without a
        # database, answers any other key with 400)
        "general_settings": {"master_key": f"os.environ/{MASTER_KEY_ENV}",
                             "custom_auth": contract.GATEWAY_AUTH_HOOK},
    }


def pod_env(backends: list[dict], master_key_secret: str) -> list[dict]:
    """The gateway container's environment for ``litellm_config``'s references."""
    env = [{"name": MASTER_KEY_ENV, "valueFrom": {"secretKeyRef": {
        "name": master_key_secret, "key": MASTER_KEY_FIELD}}}]
    keys: dict = {}
    urls: dict = {}
    for b in backends:
        if b["key_env"]:
            keys[b["key_env"]] = b["api_key_secret"]
        for replica in b["replicas"]:
            urls[replica["env"]] = replica["url"]
    env += [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": API_KEY_FIELD}}}
            for name, secret in sorted(keys.items())]
    env += [{"name": name, "value": url} for name, url in sorted(urls.items())]
    return env


def config_text(config: dict) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def config_digest(text: str, env: list[dict], key_digests: dict | None = None) -> str:
    blob = json.dumps({"config": text, "env": env, "keys": key_digests or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
