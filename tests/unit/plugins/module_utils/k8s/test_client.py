"""K8sClient's write paths under a 409: retried where resending is right, refused where not.

The seam is the dynamic client K8sClient wraps (``resources.get`` -> a resource with
``get``/``delete``/``path``, and ``client`` for the raw server-side-apply PATCH). The
fake answers with the real client's exception (``kubernetes.client.ApiException``) and
the Status bodies a real API server sends, and counts what reached it.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    ConflictError,
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import Backoff
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from kubernetes.client.exceptions import ApiException

STALE = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
         "code": 409, "message": 'Operation cannot be fulfilled on configmaps "c": the object '
         "has been modified; please apply your changes to the latest version and try again"}
ALREADY = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
           "reason": "AlreadyExists", "message": 'configmaps "c" already exists'}
FIELDS = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
          "code": 409, "message": 'Apply failed with 1 conflict: conflict with "kubectl-edit"'
          " using v1: .data.a", "details": {"causes": [{"reason": "FieldManagerConflict",
                                                        "message": 'conflict with "kubectl-edit"',
                                                        "field": ".data.a"}]}}


def _conflict(body: dict) -> ApiException:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = json.dumps(body)
    return exc


class _Response:
    def __init__(self, status: int, payload: dict):
        self.status, self.data = status, json.dumps(payload).encode()

    def read(self):
        return self.data


class _FakeApi:
    """``dynamic.client``: the raw PATCH of server-side apply."""

    def __init__(self, server):
        self.server = server

    def param_serialize(self, method, path, query_params=None, body=None, **kwargs):
        return method, path, query_params, body

    def call_api(self, method, path, query, body):
        self.server.requests.append((method, path, dict(query)))
        fault = self.server.next_fault("patch")
        if fault is not None:
            return _Response(409, fault)
        stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}
        self.server.objects[body["metadata"]["name"]] = stored
        return _Response(200, stored)

    def response_deserialize(self, response, types):
        exc = ApiException(status=response.status, reason="Conflict")
        exc.body = response.data.decode()
        raise exc


class _Found:
    def __init__(self, obj):
        self.obj = obj

    def to_dict(self):
        return self.obj


class _Resource:
    namespaced = True

    def __init__(self, server):
        self.server = server

    def path(self, name=None, namespace=None):
        return f"/api/v1/namespaces/{namespace}/configmaps/{name}"

    def get(self, name=None, namespace=None, **kwargs):
        if name not in self.server.objects:
            raise ApiException(status=404, reason="Not Found")
        return _Found(self.server.objects[name])

    def delete(self, name=None, namespace=None, **kwargs):
        self.server.requests.append(("DELETE", name, kwargs))
        fault = self.server.next_fault("delete")
        if fault is not None:
            raise _conflict(fault)
        self.server.objects.pop(name, None)
        return _Found({"kind": "Status", "status": "Success"})


class _Resources:
    def __init__(self, server):
        self.server = server

    def get(self, api_version=None, kind=None):
        return _Resource(self.server)


class FakeDynamic:
    """One namespace of ConfigMaps; ``faults[verb]`` lists the 409 bodies to answer next."""

    def __init__(self, faults=None, objects=None):
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.objects = dict(objects or {})
        self.requests: list = []
        self.client = _FakeApi(self)
        self.resources = _Resources(self)

    def next_fault(self, verb):
        queue = self.faults.get(verb) or []
        return queue.pop(0) if queue else None


def _client(dynamic, pauses):
    return K8sClient(dynamic, backoff=Backoff(tries=3, delay=0.5, jitter=False),
                     sleep=pauses.append)


def _manifest(**meta):
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
            "metadata": {"name": "c", "namespace": "ns", **meta}}


@pytest.mark.parametrize("body", [STALE, ALREADY], ids=["modified", "created-under-us"])
def test_apply_is_retried_after_one_conflict(body):
    dynamic, pauses = FakeDynamic({"patch": [body]}), []
    result = _client(dynamic, pauses).apply(_manifest(), check_mode=False)
    patches = [r for r in dynamic.requests if r[0] == "PATCH"]
    assert len(patches) == 2 and pauses == [0.5]
    assert patches[0] == patches[1]  # the same apply, sent again
    assert dynamic.objects["c"]["data"] == {"a": "1"} and result.changed


def test_delete_is_retried_after_one_conflict():
    dynamic, pauses = FakeDynamic({"delete": [STALE]}, {"c": _manifest()}), []
    assert _client(dynamic, pauses).delete("v1", "ConfigMap", "c", "ns", check_mode=False)
    assert [r[0] for r in dynamic.requests] == ["DELETE", "DELETE"] and pauses == [0.5]
    assert "c" not in dynamic.objects


def test_a_conflict_that_lasts_runs_out_of_attempts():
    dynamic, pauses = FakeDynamic({"patch": [STALE] * 5}), []
    with pytest.raises(TransientError, match="the object has been modified") as err:
        _client(dynamic, pauses).apply(_manifest(), check_mode=False)
    assert err.value.details["attempts"] == 3 and err.value.details["status"] == 409
    assert "c" not in dynamic.objects


def test_an_apply_with_a_precondition_is_not_resent():
    """The caller asked for "only if unchanged since I read it": it must re-read."""
    dynamic, pauses = FakeDynamic({"patch": [STALE]}), []
    with pytest.raises(ConflictError, match="the object has been modified"):
        _client(dynamic, pauses).apply(_manifest(resourceVersion="1"), check_mode=False)
    assert len([r for r in dynamic.requests if r[0] == "PATCH"]) == 1 and pauses == []


def test_a_field_owned_by_another_manager_is_not_taken_over_by_retrying():
    dynamic, pauses = FakeDynamic({"patch": [FIELDS]}), []
    with pytest.raises(ConflictError, match=r'conflict with "kubectl-edit" using v1: \.data\.a'):
        _client(dynamic, pauses).apply(_manifest(), check_mode=False)
    assert len([r for r in dynamic.requests if r[0] == "PATCH"]) == 1 and pauses == []
