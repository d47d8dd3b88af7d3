"""K8sClient.evict through the kubernetes client's Eviction call (``conflict_api``): a 409
is sent again after one pause; a disruption budget's 429 comes back to the drain at once,
not retried here (the drain retries at its own pace); a pod already gone is no error."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from .conflict_api import ConflictApi, RealClient, route_evictions
from .test_drain import PDB_MESSAGE, DrainFake, pod


class _Counting(ConflictApi):
    def __init__(self, cluster, fault=None, missing=()):
        super().__init__(cluster, fault)
        self.sent: list = []
        self.missing = set(missing)

    def evict(self, name, namespace):
        self.sent.append(name)
        if name in self.missing:
            raise ApiException(status=404, reason="Not Found")
        super().evict(name, namespace)


def _site():
    return DrainFake([pod("web-1", "worker-a"), pod("held", "worker-a")], blocked={"apps/held"})


def test_a_409_on_an_eviction_is_sent_again(monkeypatch):
    route_evictions(monkeypatch)
    fake, pauses = _site(), []
    api = _Counting(fake, ("evict", "Pod", "web-1", 1))
    assert RealClient(api, pauses).evict("web-1", "apps") == ""
    assert api.served == [("evict", "Pod", "web-1", 1)] and api.sent == ["web-1", "web-1"]
    assert pauses == [1.0] and fake.find("Pod", "web-1", "apps") is None


def test_a_budgets_429_is_returned_at_once_and_a_gone_pod_is_no_error(monkeypatch):
    route_evictions(monkeypatch)
    fake, pauses = _site(), []
    api = _Counting(fake, missing={"gone"})
    assert RealClient(api, pauses).evict("held", "apps") == PDB_MESSAGE
    assert RealClient(api, pauses).evict("gone", "apps") == ""
    assert api.sent == ["held", "gone"] and pauses == []
    assert fake.find("Pod", "held", "apps") is not None
