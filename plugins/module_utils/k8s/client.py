# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one Kubernetes client: a thin adapter over kubernetes.core's.

Credentials are resolved exactly as kubernetes.core resolves them (module parameters,
``K8S_AUTH_*`` environment, kubeconfig, in-cluster), through its ``get_api_client``;
TLS verification stays on unless the user turns it off. On top of it:

- one write path, ``apply``: server-side apply with our field manager and
  ``fieldValidation=Strict`` (a misspelt field fails loudly); in check mode the same
  request is sent with ``dryRun=All``, so check mode is enforced here, once;
- API errors mapped to the common error types (409 conflict, 401/403 auth, 404 not
  found, 400/422 invalid, 429/5xx transient and retried with the common backoff);
- a 409 on a write is retried where sending the same request again is right: an apply
  without a precondition (the object changed or was created under us: server-side apply
  merges our fields into whatever is there now), a delete and a pod's eviction. It is
  not retried, and raises ``ConflictError`` at once, when the apply carries
  ``metadata.resourceVersion`` (the caller re-reads and rebuilds its change) or when
  another field manager owns a field we set (``FieldManagerConflict``: taking it over is
  the caller's choice, with ``force_conflicts``; the message names the manager and the
  fields);
- ``resource()`` re-reads discovery once when a kind is unknown (an operator may just
  have registered its CRD).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import (
    has_changed,
    make_diff,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConflictError,
    ConnectionFailedError,
    GpuStackError,
    InvalidInputError,
    NotFoundError,
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import (
    Backoff,
    call_with_retries,
)

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
        get_api_client,
    )
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError as Urllib3Error

    HAS_K8S = True
    K8S_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - reported by the module
    HAS_K8S = False
    K8S_IMPORT_ERROR = _exc

FIELD_MANAGER = "llmops.gpu_stack"
_AUTH_KEYS = ("kubeconfig", "context", "host", "api_key", "username", "password",
              "validate_certs", "ca_cert", "client_cert", "client_key", "proxy", "no_proxy",
              "proxy_headers", "persist_config", "impersonate_user", "impersonate_groups")


def k8s_argument_spec() -> dict:
    """kubernetes.core's connection options (doc fragment kubernetes.core.k8s_auth_options)."""
    return copy.deepcopy(AUTH_ARG_SPEC)


@dataclass
class ApplyResult:
    """What one apply did: ``after`` is the object as the server returned it."""

    changed: bool
    before: dict | None
    after: dict
    diff: dict = field(default_factory=dict)


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
    except (TypeError, ValueError):
        data = {}
    return data.get("message") or getattr(exc, "reason", None) or str(exc)


def _field_conflict(exc) -> bool:
    """A server-side apply refused because another field manager owns a field."""
    try:
        data = json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        return False
    causes = ((data.get("details") or {}).get("causes") or []) if isinstance(data, dict) else []
    return any(c.get("reason") == "FieldManagerConflict" for c in causes)


def translate(exc: BaseException, what: str, retry_conflict: bool = False) -> GpuStackError:
    """Map a kubernetes client error to the common error types; a 409 becomes a
    ``TransientError`` (retried) when ``retry_conflict`` and it is no field-manager
    conflict."""
    status = getattr(exc, "status", None)
    msg = f"{what}: {_status_message(exc)}"
    if status == 409:
        if retry_conflict and not _field_conflict(exc):
            return TransientError(msg, status=status)
        return ConflictError(msg, status=status)
    if status in (401, 403):
        return AuthError(msg, status=status)
    if status == 404:
        return NotFoundError(msg, status=status)
    if status in (400, 422):
        return InvalidInputError(msg, status=status)
    if status == 429 or (status is not None and status >= 500):
        headers = getattr(exc, "headers", None) or {}
        retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
        try:
            hint = float(retry_after) if retry_after is not None else None
        except ValueError:
            hint = None
        return TransientError(msg, retry_after=hint, status=status)
    if status is None:
        return ConnectionFailedError(f"{what}: cannot reach the API server: {exc}")
    return GpuStackError(msg, status=status)


class K8sClient:
    """Reads and the one write path (server-side apply) against one cluster."""

    def __init__(self, dynamic, backoff: Backoff | None = None, sleep=None):
        self.dynamic = dynamic
        self.backoff = backoff or Backoff(tries=5, delay=1.0, max_delay=15.0)
        self._sleep = sleep
        self._resources: dict = {}

    @classmethod
    def from_params(cls, params: dict, **kwargs) -> K8sClient:
        """Build from kubernetes.core auth parameters (unset ones fall back to env/kubeconfig)."""
        if not HAS_K8S:
            raise GpuStackError(f"the kubernetes Python client is needed: {K8S_IMPORT_ERROR}")
        auth = {k: params.get(k) for k in _AUTH_KEYS if params.get(k) is not None}
        try:
            api = get_api_client(**auth)
        except Exception as exc:  # ConfigException, bad kubeconfig, file not found
            raise InvalidInputError(f"cannot load the Kubernetes credentials: {exc}") from exc
        return cls(api.client, **kwargs)

    # --- plumbing -----------------------------------------------------------------------
    def _call(self, what: str, func, *args, retry_conflict: bool = False, **kwargs):
        def _once():
            try:
                return func(*args, **kwargs)
            except (ApiException, DynamicApiError) as exc:
                raise translate(exc, what, retry_conflict) from exc
            except Urllib3Error as exc:
                raise ConnectionFailedError(f"{what}: cannot reach the API server: {exc}") from exc

        extra = {"sleep": self._sleep} if self._sleep else {}
        return call_with_retries(_once, strategy=self.backoff, **extra)

    def resource(self, api_version: str, kind: str):
        key = (api_version, kind)
        if key not in self._resources:
            try:
                self._resources[key] = self._call(
                    f"discovery of {kind} ({api_version})",
                    self.dynamic.resources.get, api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                self.dynamic.resources.invalidate_cache()
                try:
                    self._resources[key] = self.dynamic.resources.get(
                        api_version=api_version, kind=kind)
                except ResourceNotFoundError as exc:
                    raise NotFoundError(
                        f"the cluster does not serve {kind} in {api_version} "
                        "(is its operator installed?)") from exc
        return self._resources[key]

    # --- reads --------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None):
        res = self.resource(api_version, kind)
        try:
            found = self._call(f"read {kind} {_ref(name, namespace)}", res.get,
                               name=name, namespace=namespace)
        except NotFoundError:
            return None
        return found.to_dict()

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list:
        res = self.resource(api_version, kind)
        found = self._call(f"list {kind}", res.get, namespace=namespace,
                           label_selector=label_selector, field_selector=field_selector)
        return list(found.to_dict().get("items") or [])

    # --- the one write path -------------------------------------------------------------
    def apply(self, manifest: dict, *, check_mode: bool, force_conflicts: bool = False,
              manager_suffix: str = "") -> ApplyResult:
        """Server-side apply ``manifest`` (dry run in check mode); report the change.

        ``manager_suffix`` applies under ``llmops.gpu_stack/<suffix>``: a second set of
        fields we own apart (omitting a field in an apply releases and removes it, so
        e.g. an annotation written later must not be applied by the manager that owns
        the object's immutable spec)."""
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        meta = manifest.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not name:
            raise InvalidInputError(f"{kind} manifest without metadata.name")
        res = self.resource(api_version, kind)
        if not res.namespaced:
            namespace = None
        if check_mode and namespace and self.get("v1", "Namespace", namespace) is None:
            # A dry run into a namespace that a real run would create first cannot be
            # sent (the server answers 404): the object would simply be created.
            return ApplyResult(changed=True, before=None, after=manifest,
                               diff=make_diff({}, manifest))
        before = self.get(api_version, kind, name, namespace)
        manager = f"{FIELD_MANAGER}/{manager_suffix}" if manager_suffix else FIELD_MANAGER
        query = [("fieldManager", manager), ("fieldValidation", "Strict")]
        if force_conflicts:
            query.append(("force", "true"))
        if check_mode:
            query.append(("dryRun", "All"))
        path = res.path(name=name, namespace=namespace)
        after = self._call(f"apply {kind} {_ref(name, namespace)}", self._patch, path, query,
                           manifest, retry_conflict="resourceVersion" not in meta)
        changed = before is None or has_changed(before, after)
        return ApplyResult(changed=changed, before=before, after=after,
                           diff=make_diff(before or {}, after) if changed else {})

    def _patch(self, path: str, query: list, body: dict) -> dict:
        api = self.dynamic.client
        request = api.param_serialize(
            "PATCH", path, query_params=query, body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/apply-patch+yaml",
                           "Accept": "application/json"})
        response = api.call_api(*request)
        response.read()
        if not 200 <= response.status <= 299:
            api.response_deserialize(response, {})  # raises ApiException with the Status
        return json.loads(response.data)

    def logs(self, pod: str, namespace: str, container: str | None = None) -> str:
        """A pod's log (the container's output so far)."""
        from kubernetes.client import CoreV1Api

        core = CoreV1Api(self.dynamic.client)
        kwargs = {"container": container} if container else {}
        return self._call(f"log of pod {namespace}/{pod}", core.read_namespaced_pod_log,
                          pod, namespace, **kwargs)

    def evict(self, name: str, namespace: str, *, grace_period: int | None = None) -> str:
        """Evict a pod through the Eviction API (``drain.py``): "" when it was evicted or
        is gone already, the server's message when a disruption budget refuses it now
        (429, which the caller retries at its own pace, so not here). A 409 (the pod or
        its budget changed under the request) or a 5xx is retried like any write:
        sending the same eviction again is right."""
        from kubernetes.client import CoreV1Api

        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": namespace}}
        if grace_period is not None:
            body["deleteOptions"] = {"gracePeriodSeconds": grace_period}
        core = CoreV1Api(self.dynamic.client)

        def _evict_once() -> str:
            try:
                core.create_namespaced_pod_eviction(name, namespace, body)
            except (ApiException, DynamicApiError) as exc:
                if exc.status == 404:
                    return ""
                if exc.status == 429:
                    return _status_message(exc)
                raise
            return ""

        return self._call(f"evict pod {namespace}/{name}", _evict_once, retry_conflict=True)

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, check_mode: bool, propagation: str | None = None) -> bool:
        """Delete if present; True when something was (or in check mode would be) deleted."""
        if self.get(api_version, kind, name, namespace) is None:
            return False
        res = self.resource(api_version, kind)
        kwargs = {"dry_run": "All"} if check_mode else {}
        if propagation:
            kwargs["propagation_policy"] = propagation
        try:
            self._call(f"delete {kind} {_ref(name, namespace)}", res.delete, name=name,
                       namespace=namespace, retry_conflict=True, **kwargs)
        except NotFoundError:
            return False
        return True


def _ref(name: str, namespace: str | None) -> str:
    return f"{namespace}/{name}" if namespace else name
