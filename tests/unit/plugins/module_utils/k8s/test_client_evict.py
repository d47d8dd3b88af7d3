"""K8sClient.evict: one POST to the Eviction subresource; a disruption budget's 429 comes
back as the server's message (the drain retries at its own pace), a pod already gone is
fine, anything else is the common error type."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import AuthError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

BUDGET = "Cannot evict pod as it would violate the pod's disruption budget."


def _error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="refused")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


@pytest.fixture
def evictions(monkeypatch):
    sent, outcomes = [], []

    def _create(self, name, namespace, body):
        sent.append((name, namespace, body))
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(CoreV1Api, "create_namespaced_pod_eviction", _create)
    return sent, outcomes


def test_evict_outcomes(evictions):
    sent, outcomes = evictions
    client = K8sClient(SimpleNamespace(client=None), sleep=lambda s: pytest.fail("no retry"))
    outcomes += [None, _error(429, BUDGET), _error(404, "pods \"a\" not found"),
                 _error(403, "forbidden")]
    assert client.evict("a", "apps", grace_period=5) == ""
    assert sent[0] == ("a", "apps", {"apiVersion": "policy/v1", "kind": "Eviction",
                                     "metadata": {"name": "a", "namespace": "apps"},
                                     "deleteOptions": {"gracePeriodSeconds": 5}})
    assert client.evict("a", "apps") == BUDGET
    assert "deleteOptions" not in sent[1][2]
    assert client.evict("a", "apps") == ""
    with pytest.raises(AuthError, match="evict pod apps/a: forbidden"):
        client.evict("a", "apps")
    assert len(sent) == 4  # one request each: no retry inside
