"""The lab API server evicts as kube-apiserver does: ``POST pods/{name}/eviction``
answers 201 and deletes the pod, or 429 while a PodDisruptionBudget forbids it; every
check reads the pods back with the plain Kubernetes client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.lab


@pytest.fixture
def core(k8s_protocol_server: LabServer) -> Any:
    c = api_client(k8s_protocol_server)
    yield client.CoreV1Api(c), client.PolicyV1Api(c)
    c.close()


def _ready_pod(core_api, ns: str, name: str) -> None:
    core_api.create_namespaced_pod(ns, {
        "metadata": {"name": name, "labels": {"app": "gpu-worker"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]}})
    core_api.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


def _evict(core_api, ns: str, name: str):
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns),
                             delete_options=client.V1DeleteOptions(grace_period_seconds=0))
    return core_api.create_namespaced_pod_eviction(name, ns, body)


def _gone_or_deleting(core_api, ns: str, name: str) -> bool:
    try:
        pod = core_api.read_namespaced_pod(name, ns)
    except ApiException as exc:
        return exc.status == 404
    return pod.metadata.deletion_timestamp is not None


def test_eviction_respects_the_disruption_budget(core) -> None:
    core_api, policy = core
    ns = "evict-pdb"
    core_api.create_namespace({"metadata": {"name": ns}})
    _ready_pod(core_api, ns, "a")
    policy.create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "keep-one"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "gpu-worker"}}}})

    with pytest.raises(ApiException) as err:
        _evict(core_api, ns, "a")
    assert err.value.status == 429
    status = json.loads(err.value.body)
    assert status["reason"] == "TooManyRequests"
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert core_api.read_namespaced_pod("a", ns).metadata.deletion_timestamp is None

    _ready_pod(core_api, ns, "b")  # two healthy, one may go
    _evict(core_api, ns, "a")
    assert _gone_or_deleting(core_api, ns, "a")
    assert core_api.read_namespaced_pod("b", ns).metadata.deletion_timestamp is None
    with pytest.raises(ApiException) as err:  # b is now the last healthy one
        _evict(core_api, ns, "b")
    assert err.value.status == 429


def test_eviction_without_budget_deletes_and_missing_pod_is_404(core) -> None:
    core_api, _policy = core
    ns = "evict-plain"
    core_api.create_namespace({"metadata": {"name": ns}})
    _ready_pod(core_api, ns, "solo")
    _evict(core_api, ns, "solo")
    assert _gone_or_deleting(core_api, ns, "solo")
    names = [p.metadata.name for p in core_api.list_namespaced_pod(ns).items
             if p.metadata.deletion_timestamp is None]
    assert names == []  # no new pod was created by the eviction
    with pytest.raises(ApiException) as err:
        _evict(core_api, ns, "nothing-here")
    assert err.value.status == 404
