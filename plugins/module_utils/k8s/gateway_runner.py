# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The gateway's runner: decide, act, wait, record, diff, check mode.

``run(client, request, progress=None, out=None) -> result``

- ``state="absent"``: removes what ``present`` wrote (Route, Service, NetworkPolicy,
  Deployment, config and hand-over ConfigMaps, master-key Secret).
- ``state="present"``: the inputs are checked and the served models read (the serving
  stage's hand-over ConfigMaps, their API-key Secrets) before the first write; LiteLLM's
  config is generated from them (``gateway.config``); then the master-key Secret
  (generated once, kept across reruns), the objects (server-side apply, dry run in check
  mode) with the digest of the config, URLs and keys as the pods' annotation, the wait
  (skipped in check mode) and last the hand-over ConfigMap ``<name>-endpoint``.

A model removed from the serving stage (its hand-over gone) leaves the config on the
next run; a rerun with nothing changed writes nothing. Keys never reach the result or
the diff (only the Secrets' names). Errors are the common types.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import merge_diffs
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import config, render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gateway import LlmGateway

STATES = ("present", "absent")


@dataclass
class Request:
    """What the gateway is asked to do (the module's parameters, parsed)."""

    namespace: str
    name: str = "llm-gateway"
    state: str = "present"
    image: str | None = None
    models: list | None = None  # serving release names; None: every hand-over
    master_key: str | None = field(default=None, repr=False)
    master_key_secret: str | None = None  # None: <name>-master-key
    replicas: int = 1
    workers: int = 1
    resources: dict = field(default_factory=lambda: {
        "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    node_selector: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    route_host: str | None = None
    route_timeout: str = "600s"
    num_retries: int = 2
    request_timeout: int = 600
    allowed_fails: int = 3
    cooldown_time: int = 30
    wait: bool = True
    wait_timeout: float = 600
    check_mode: bool = False
    diff: bool = False

    @property
    def secret_name(self) -> str:
        return self.master_key_secret or f"{self.name}-master-key"

    def config(self) -> dict:
        keys = ("namespace", "name", "image", "replicas", "workers", "resources",
                "node_selector", "env", "route_host", "route_timeout")
        return {**{k: getattr(self, k) for k in keys}, "master_key_secret": self.secret_name}

    def settings(self) -> dict:
        return {"num_retries": self.num_retries, "request_timeout": self.request_timeout,
                "allowed_fails": self.allowed_fails, "cooldown_time": self.cooldown_time}


def _check(req: Request) -> None:
    if req.state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, got {req.state!r}")
    if req.wait_timeout < 0:
        raise InvalidInputError(f"wait_timeout must not be negative, got {req.wait_timeout}")
    if req.state == "absent":
        return
    if not req.image:
        raise InvalidInputError("state=present needs: image")
    if req.master_key is not None and (not req.master_key.startswith(config.MASTER_KEY_PREFIX)
                                       or len(req.master_key) < 20):
        raise InvalidInputError(f"master_key must start with {config.MASTER_KEY_PREFIX!r} "
                                "(LiteLLM's key format) and hold at least 20 characters")
    for key in ("num_retries", "request_timeout", "allowed_fails", "cooldown_time", "workers"):
        if getattr(req, key) < (1 if key in ("request_timeout", "workers") else 0):
            raise InvalidInputError(f"{key} is out of range: {getattr(req, key)}")
    if req.models is not None and len(set(req.models)) != len(req.models):
        raise InvalidInputError(f"models lists a release twice: {req.models}")
    render.validate(req.config())


def _timed(progress):
    started = time.monotonic()

    def _line(status, _elapsed):
        progress(f"+{time.monotonic() - started:.0f}s {status.progress}")

    return _line


def run(client, req: Request, progress=None, out: dict | None = None) -> dict:
    """Bring the gateway to ``req.state``; the module's result."""
    out = {} if out is None else out
    out.update(changed=False, progress=[], master_key_secret=req.secret_name)
    _check(req)
    gw = LlmGateway(client, req.config())
    if req.state == "absent":
        out["changed"] = gw.remove(req.check_mode)
        return out
    # --- decide: everything read and rendered before the first write ---------------------
    backends = [config.backend(cm) for cm in gw.served(req.models)]
    if not backends and req.check_mode:
        out["warnings"] = [f"no served model in namespace {req.namespace} yet (check mode: "
                           "the serving stage may provide one in a real run)"]
        out["changed"] = True
        return out
    if not backends:
        raise InvalidInputError(f"no served model in namespace {req.namespace}: run the "
                                "serving stage first (its hand-over ConfigMaps name them)")
    settings = config.litellm_config(backends, req.settings())
    text = config.config_text(settings)
    env = config.pod_env(backends, req.secret_name)
    digests = gw.key_digests(backends)
    render.manifests(gw.cfg, text, env, "0" * 64)  # input problems raise before writes
    out["models"] = sorted({b["served_model_name"] for b in backends})
    out["deployments"] = {m: [e["model_info"]["id"] for e in settings["model_list"]
                              if e["model_name"] == m] for m in out["models"]}
    # --- act ----------------------------------------------------------------------------
    changed, master_sha = gw.ensure_master_key(req.master_key, req.check_mode)
    out["changed"] |= changed
    digest = config.config_digest(text, env, {**digests, "master": master_sha or "new"})
    out["config_sha256"] = digest
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": req.namespace}}
    changed, diffs = gw.apply_objects([ns_obj, *render.manifests(gw.cfg, text, env, digest)],
                                      req.check_mode)
    out["changed"] |= changed

    def _record(line):
        out["progress"].append(line)
        if progress is not None:
            progress(line)

    if req.wait:
        gw.wait(req.wait_timeout, progress=_timed(_record), check_mode=req.check_mode)
    endpoint = gw.endpoint()
    if endpoint:
        out["endpoint"] = endpoint
    out["service_url"] = f"http://{req.name}.{req.namespace}.svc:{render.PORT}"
    changed, record = gw.apply_objects([render.handover(gw.cfg, endpoint, out["models"])],
                                       req.check_mode)
    out["changed"] |= changed
    out["handover"] = render.handover_name(req.name)
    diffs.update(record)
    if req.diff and diffs:
        out["diff"] = merge_diffs(diffs)
    return out
