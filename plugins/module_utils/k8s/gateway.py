# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The gateway on a cluster: the served models, the master key, apply, wait, removal.

API
---
``LlmGateway(client, cfg)``, ``cfg`` as ``gateway.render`` takes it (name, namespace,
image, replicas, master_key_secret, ...):

- ``served(models) -> list``: the serving stage's hand-over ConfigMaps in the namespace
  (label ``app.kubernetes.io/component=serving-handover``), all of them or those of the
  serving releases named in ``models``; a named one that is missing is refused.
- ``key_digests(backends) -> dict``: each backend API-key Secret's SHA-256 of its key
  (a missing Secret or key is refused; the key itself is never returned).
- ``ensure_master_key(key, check_mode) -> (changed, sha256)``: the master-key Secret; a
  given key is written, otherwise an existing one is kept and a missing one generated.
- ``apply_objects(manifests, check_mode) -> (changed, diffs)``: server-side apply.
- ``wait(timeout, progress, check_mode)``: the Deployment's pods of the current
  template ready and the Route admitted; pods that cannot start end the wait at once.
- ``endpoint() -> str | None``; ``remove(check_mode) -> bool``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import has_changed
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    NotFoundError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import config, render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults

SERVING_HANDOVER = "app.kubernetes.io/component=serving-handover"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _without_status(obj: dict | None) -> dict:
    return {k: v for k, v in (obj or {}).items() if k != "status"}


class LlmGateway:
    def __init__(self, client, cfg: dict):
        self.client = client
        self.cfg = cfg
        self.ns = cfg["namespace"]
        self.name = cfg["name"]

    # --- inputs -------------------------------------------------------------------------
    def served(self, models: list | None) -> list[dict]:
        found = []
        if self.client.get("v1", "Namespace", self.ns) is not None:
            found = self.client.list("v1", "ConfigMap", self.ns, label_selector=SERVING_HANDOVER)
        by_release = {(cm.get("data") or {}).get("service") or cm["metadata"]["name"]: cm
                      for cm in found}
        if models is None:
            return [by_release[k] for k in sorted(by_release)]
        missing = [m for m in models if m not in by_release]
        if missing:
            raise InvalidInputError(
                f"no served model {', '.join(missing)} in namespace {self.ns} (found: "
                f"{', '.join(sorted(by_release)) or 'none'}): run the serving stage first")
        return [by_release[m] for m in models]

    def key_digests(self, backends: list[dict]) -> dict:
        digests = {}
        for b in backends:
            name = b["api_key_secret"]
            if not name or name in digests:
                continue
            secret = self.client.get("v1", "Secret", name, self.ns)
            stored = ((secret or {}).get("data") or {}).get(config.API_KEY_FIELD)
            if not stored:
                raise InvalidInputError(
                    f"the API-key Secret {self.ns}/{name} of {b['served_model_name']} is "
                    f"missing or has no {config.API_KEY_FIELD!r}: rerun the serving stage")
            digests[name] = _sha256(base64.b64decode(stored).decode())
        return digests

    # --- the master key -----------------------------------------------------------------
    def ensure_master_key(self, key: str | None, check_mode: bool) -> tuple[bool, str | None]:
        name = self.cfg["master_key_secret"]
        current = self.client.get("v1", "Secret", name, self.ns)
        stored = ((current or {}).get("data") or {}).get(config.MASTER_KEY_FIELD)
        held = base64.b64decode(stored).decode() if stored else None
        want = key if key is not None else held
        if want is not None and want == held:
            return False, _sha256(want)
        if check_mode:
            return True, _sha256(want) if want else None
        want = want or config.MASTER_KEY_PREFIX + secrets.token_urlsafe(32)
        self.client.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "namespace": self.ns,
                                        "labels": render.labels(self.cfg)},
                           "stringData": {config.MASTER_KEY_FIELD: want}}, check_mode=False)
        return True, _sha256(want)

    # --- apply --------------------------------------------------------------------------
    def apply_objects(self, manifests: list[dict], check_mode: bool) -> tuple[bool, dict]:
        changed, diffs = False, {}
        for manifest in manifests:
            result = self.client.apply(manifest, check_mode=check_mode)
            if result.before is None or has_changed(_without_status(result.before),
                                                    _without_status(result.after)):
                changed = True
                diffs[f"{manifest['kind']}/{manifest['metadata']['name']}"] = {
                    "before": _without_status(result.before),
                    "after": _without_status(result.after)}
        return changed, diffs

    # --- wait ---------------------------------------------------------------------------
    def _rollout(self) -> tuple[bool, str]:
        dep = self.client.get("apps/v1", "Deployment", self.name, self.ns) or {}
        want = (dep.get("spec") or {}).get("replicas", 1)
        status = dep.get("status") or {}
        current = (status.get("observedGeneration", 0) >= (dep.get("metadata") or {}).get(
            "generation", 0))
        updated, ready = status.get("updatedReplicas", 0), status.get("availableReplicas", 0)
        total = status.get("replicas", 0)
        done = current and updated >= want and ready >= want and total <= want
        return done, f"{min(updated, ready)} of {want} gateway pods updated and ready"

    def route_host(self) -> str | None:
        route = self.client.get("route.openshift.io/v1", "Route", self.name, self.ns) or {}
        for ingress in (route.get("status") or {}).get("ingress") or []:
            if ingress.get("host") and any(
                    c.get("type") == "Admitted" and c.get("status") == "True"
                    for c in ingress.get("conditions") or []):
                return ingress["host"]
        return None

    def wait(self, timeout: float, progress=None, check_mode: bool = False) -> WaitStatus:
        faults = PodFaults()
        what = f"the gateway {self.ns}/{self.name}"
        selector = ",".join(f"{k}={v}" for k, v in sorted(render.selector(self.cfg).items()))

        def _check() -> WaitStatus:
            pods = self.client.list("v1", "Pod", self.ns, label_selector=selector)
            faults.check(pods, what)
            done, line = self._rollout()
            ready = ["pods"] if done else []
            if self.route_host():
                ready.append("route")
            status = WaitStatus.of(["pods", "route"], ready, "gateway parts ready")
            return WaitStatus(done=status.done, present=status.present,
                              missing=status.missing, progress=line)

        return wait_for(_check, timeout=timeout, what=what, interval=1.0, backoff=1.3,
                        max_interval=10.0, progress=progress, progress_every=15.0,
                        check_mode=check_mode)

    def endpoint(self) -> str | None:
        host = self.route_host()
        return f"https://{host}" if host else None

    # --- removal ------------------------------------------------------------------------
    def remove(self, check_mode: bool) -> bool:
        if self.client.get("v1", "Namespace", self.ns) is None:
            return False
        targets = [("route.openshift.io/v1", "Route", self.name), ("v1", "Service", self.name),
                   ("networking.k8s.io/v1", "NetworkPolicy", self.name),
                   ("apps/v1", "Deployment", self.name),
                   ("v1", "ConfigMap", render.config_map_name(self.name)),
                   ("v1", "ConfigMap", render.handover_name(self.name)),
                   ("v1", "Secret", self.cfg["master_key_secret"])]
        changed = False
        for api_version, kind, name in targets:
            try:
                changed |= self.client.delete(api_version, kind, name, self.ns,
                                              check_mode=check_mode)
            except NotFoundError:
                continue
        return changed
