"""The real K8sClient over the in-memory cluster of ``fake_client.FakeClient``, with one 409.

``ConflictApi(cluster, fault)`` is the dynamic client K8sClient wraps (discovery,
``get``/``list``/``delete`` on a resource, the raw server-side-apply PATCH, a pod's
eviction once ``route_evictions`` is in place), storing in ``cluster`` (a FakeClient).
``fault`` is ``(verb, kind, name, n)``: the ``n``-th real write (``"apply"``,
``"delete"`` or ``"evict"``, dry runs not counted) of that object is answered with
the 409 a real API server sends when an object changed under the writer, once, as the
real client's ``ApiException``; ``served`` then holds it. Everything else reaches the
cluster, so the code under test runs through K8sClient's own error mapping and retry.
"""

from __future__ import annotations

import json
from collections import Counter

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import Backoff
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import (
    FIELD_MANAGER,
    K8sClient,
)
from kubernetes.client.exceptions import ApiException

from .fake_client import CLUSTER_SCOPED, FakeClient


def stale(kind: str, name: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
            "code": 409, "message": f'Operation cannot be fulfilled on {kind.lower()}s "{name}": '
            "the object has been modified; please apply your changes to the latest version "
            "and try again"}


def _error(status: int, body: dict | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Conflict" if status == 409 else "Not Found")
    exc.body = json.dumps(body or {"kind": "Status", "code": status})
    return exc


class _Found:
    def __init__(self, obj: dict):
        self.obj = obj

    def to_dict(self) -> dict:
        return self.obj


class _Response:
    def __init__(self, status: int, payload: dict):
        self.status, self.data = status, json.dumps(payload).encode()

    def read(self) -> bytes:
        return self.data


class _Resource:
    def __init__(self, api: ConflictApi, api_version: str, kind: str):
        self.api, self.api_version, self.kind = api, api_version, kind
        self.namespaced = kind not in CLUSTER_SCOPED

    def path(self, name=None, namespace=None) -> str:
        path = f"/fake/{self.api_version}/{self.kind}/{namespace or '-'}/{name}"
        self.api.paths[path] = (self.api_version, self.kind, name, namespace)
        return path

    def get(self, name=None, namespace=None, label_selector=None, field_selector=None):
        cluster = self.api.cluster
        if name is None:
            return _Found({"items": cluster.list(self.api_version, self.kind, namespace,
                                                 label_selector, field_selector)})
        found = cluster.get(self.api_version, self.kind, name, namespace)
        if found is None:
            raise _error(404)
        return _Found(found)

    def delete(self, name=None, namespace=None, dry_run=None, propagation_policy=None):
        check_mode = dry_run == "All"
        if not check_mode:
            self.api.fail_if_due("delete", self.kind, name)
        if not self.api.cluster.delete(self.api_version, self.kind, name, namespace,
                                       check_mode=check_mode, propagation=propagation_policy):
            raise _error(404)
        return _Found({"kind": "Status", "status": "Success"})


class _Resources:
    def __init__(self, api: ConflictApi):
        self.api = api

    def get(self, api_version=None, kind=None):
        return _Resource(self.api, api_version, kind)

    def invalidate_cache(self) -> None:
        pass


class _RawApi:
    """``dynamic.client``: only the server-side-apply PATCH goes through here."""

    def __init__(self, api: ConflictApi):
        self.api = api

    def param_serialize(self, method, path, query_params=None, body=None, **kwargs):
        return method, path, list(query_params or []), body

    def call_api(self, method, path, query, body):
        _version, kind, name, _ns = self.api.paths[path]
        query = dict(query)
        check_mode = query.get("dryRun") == "All"
        if not check_mode:
            try:
                self.api.fail_if_due("apply", kind, name)
            except ApiException as exc:
                return _Response(409, json.loads(exc.body))
        manager = query["fieldManager"]
        suffix = manager[len(FIELD_MANAGER) + 1:] if manager != FIELD_MANAGER else ""
        result = self.api.cluster.apply(body, check_mode=check_mode,
                                        force_conflicts=query.get("force") == "true",
                                        manager_suffix=suffix)
        return _Response(200, result.after)

    def response_deserialize(self, response, types):
        exc = _error(response.status)
        exc.body = response.data.decode()
        raise exc


class ConflictApi:
    def __init__(self, cluster: FakeClient, fault: tuple | None = None):
        self.cluster, self.fault = cluster, fault
        self.paths: dict = {}
        self.seen: Counter = Counter()
        self.served: list = []
        self.resources = _Resources(self)
        self.client = _RawApi(self)

    def evict(self, name: str, namespace: str) -> None:
        """The Eviction API, for a cluster with ``evict`` (test_drain's DrainFake): 429
        with the budget's message when it refuses."""
        self.fail_if_due("evict", "Pod", name)
        refused = self.cluster.evict(name, namespace)
        if refused:
            raise _error(429, {"kind": "Status", "code": 429, "message": refused})
        self.cluster.writes.append(("evict", "Pod", name))

    def fail_if_due(self, verb: str, kind: str, name: str) -> None:
        self.seen[(verb, kind, name)] += 1
        if self.fault == (verb, kind, name, self.seen[(verb, kind, name)]):
            self.served.append(self.fault)
            raise _error(409, stale(kind, name))


class RealClient(K8sClient):
    """K8sClient itself, no pauses between attempts; pod logs from the fake cluster."""

    def __init__(self, api: ConflictApi, pauses: list):
        super().__init__(api, backoff=Backoff(tries=3, delay=1.0, jitter=False),
                         sleep=pauses.append)

    def logs(self, pod: str, namespace: str, container: str | None = None) -> str:
        return self.dynamic.cluster.logs(pod, namespace, container)


def route_evictions(monkeypatch) -> None:
    """K8sClient.evict's one call into the kubernetes client reaches ``ConflictApi.evict``."""
    from kubernetes.client import CoreV1Api

    def _evict(core, name, namespace, body, **kwargs):
        core.api_client.api.evict(name, namespace)

    monkeypatch.setattr(CoreV1Api, "create_namespaced_pod_eviction", _evict)


def write_paths(writes: list) -> list[tuple]:
    """Each real write of a clean run as ``(verb, kind, name, n)``: the n-th of its kind."""
    seen: Counter = Counter()
    out = []
    for verb, kind, name in writes:
        seen[(verb, kind, name)] += 1
        out.append((verb, kind, name, seen[(verb, kind, name)]))
    return out
