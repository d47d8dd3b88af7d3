"""A lab restarted on the same home is the same cluster: objects, running pods, port."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import api_client
from kubernetes import client

from .waiting import wait_for

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
    _wait_available(apps, 2)
    pods = {p.metadata.name: p.metadata.uid
            for p in client.CoreV1Api(api).list_namespaced_pod("default").items}
    port, rv = first.port, first.store.rv
    api.close()
    first.stop()

    second = k8s_lab_factory(home=tmp_path)
    assert second.restored and second.port == port and second.store.rv >= rv
    api = api_client(second)
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    assert apps.read_namespaced_deployment("web", "default").status.available_replicas == 2
    # the restarted controllers have run: a third replica is scheduled and available ...
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    _wait_available(apps, 3)
    # ... beside the two pods of before, kept (same uid) and running
    after = {p.metadata.name: p for p in core.list_namespaced_pod("default").items}
    assert {n: after[n].metadata.uid for n in pods if n in after} == pods
    assert len(after) == 3 and all(p.status.phase == "Running" for p in after.values())
    api.close()


def _wait_available(apps: client.AppsV1Api, replicas: int) -> None:
    wait_for(lambda: (apps.read_namespaced_deployment("web", "default").status
                      .available_replicas or 0) >= replicas,
             f"deployment web: {replicas} available replicas", timeout=20)
