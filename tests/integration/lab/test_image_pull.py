"""The lab's kubelet cannot pull an image whose registry does not resolve (image_pull.py)."""

from __future__ import annotations

from typing import Any

import pytest
from gpu_lab.controllers.image_pull import pull_error, registry_host
from kubernetes import client, watch

from .waiting import wait_for

pytestmark = pytest.mark.lab

BAD = "registry.invalid/team/stager:1.0"


@pytest.mark.parametrize(("image", "host"), [
    (BAD, "registry.invalid"), ("registry.invalid:5000/x", "registry.invalid"),
    ("registry.example.com/llmops/gpu-stack-runtime:0.1.0", "registry.example.com"),
    ("busybox", "docker.io"),
    ("library/busybox:1", "docker.io"), ("localhost/x", "localhost"),
])
def test_the_registry_host_of_an_image(image: str, host: str) -> None:
    assert registry_host(image) == host
    assert (pull_error(image) is not None) == host.endswith(".invalid")


def _reasons_until_second_back_off(core: Any, namespace: str, start: str) -> list:
    """The pod's (phase, waiting reason) as each change happens, from a watch, until the
    kubelet has backed off twice (every state is seen: nothing is missed between polls)."""
    seen: list = []
    for event in watch.Watch().stream(core.list_namespaced_pod, namespace,
                                      field_selector="metadata.name=unpullable",
                                      resource_version=start, timeout_seconds=20):
        status = event["object"].status
        waiting = (status.container_statuses or [None])[0]
        reason = waiting.state.waiting.reason if waiting and waiting.state.waiting else None
        if not seen or seen[-1] != (status.phase, reason):
            seen.append((status.phase, reason))
        if [r for _p, r in seen].count("ImagePullBackOff") >= 2:
            break
    return seen


def test_an_unpullable_image_backs_off_and_never_starts(k8s_client: Any,
                                                        k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    start = core.list_namespaced_pod(k8s_namespace).metadata.resource_version
    core.create_namespaced_pod(k8s_namespace, {"metadata": {"name": "unpullable"}, "spec": {
        "containers": [{"name": "main", "image": BAD}]}})
    core.create_namespaced_pod(k8s_namespace, {"metadata": {"name": "pullable"}, "spec": {
        "containers": [{"name": "main", "image": "registry.local/app:1"}]}})
    seen = _reasons_until_second_back_off(core, k8s_namespace, start)
    pulls = [r for _p, r in seen if r in ("ErrImagePull", "ImagePullBackOff")]
    assert pulls == ["ErrImagePull", "ImagePullBackOff"] * 2, seen
    assert {p for p, _r in seen} == {"Pending"}, seen  # never started
    pod = core.read_namespaced_pod("unpullable", k8s_namespace)
    assert pod.spec.node_name  # scheduled: it is the pull that fails
    events = core.list_namespaced_event(
        k8s_namespace, field_selector="involvedObject.name=unpullable").items
    reasons = {e.reason: e.message for e in events}
    assert reasons["Failed"] == f'Failed to pull image "{BAD}": {pull_error(BAD)}'
    assert "lookup registry.invalid: no such host" in reasons["Failed"]
    assert reasons["BackOff"] == f'Back-off pulling image "{BAD}"'
    # the same lab runs an image it can pull: only the unresolvable registry fails
    wait_for(lambda: core.read_namespaced_pod("pullable", k8s_namespace).status.phase
             == "Running", "the pullable pod running")
