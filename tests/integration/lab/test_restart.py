"""A lab restarted on the same home is the same cluster: objects, running pods, port."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client
from kubernetes import client

pytestmark = pytest.mark.lab


def test_state_survives_a_restart(k8s_lab_factory: Callable[..., LabServer],
                                  tmp_path: Path) -> None:
    first = k8s_lab_factory(home=tmp_path)
    api = api_client(first)
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    deadline = time.monotonic() + 20
    while (apps.read_namespaced_deployment("web", "default").status.available_replicas or 0) < 2:
        assert time.monotonic() < deadline, "deployment not available"
        time.sleep(0.1)
    pods = {p.metadata.name: p.metadata.uid
            for p in client.CoreV1Api(api).list_namespaced_pod("default").items}
    port, rv = first.port, first.store.rv
    api.close()
    first.stop()

    second = k8s_lab_factory(home=tmp_path)
    assert second.restored and second.port == port and second.store.rv >= rv
    api = api_client(second)
    core = client.CoreV1Api(api)
    time.sleep(0.5)
    after = core.list_namespaced_pod("default").items
    assert {p.metadata.name: p.metadata.uid for p in after} == pods
    assert all(p.status.phase == "Running" for p in after)
    dep = client.AppsV1Api(api).read_namespaced_deployment("web", "default")
    assert dep.status.available_replicas == 2
    api.close()
