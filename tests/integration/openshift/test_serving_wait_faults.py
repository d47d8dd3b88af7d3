"""The serving wait ends early with the pod's reason: ray_vllm_cluster against the lab
with an image whose registry does not resolve; check mode then reports the roll (the
images before and after) and touches no pod; a run with a pullable image converges as
it is, without state=absent (the stuck pods are replaced by pods running it) and a third
run changes nothing.
With every node cordoned, the wait ends with the scheduler's message; once the nodes
are back the same run converges and a third changes nothing.
Independent reads: the pods' status and the lab's events."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from .k8s_helpers import api, custom, run_module
from .test_ray_vllm_inputs import (  # noqa: F401 pylint: disable=unused-import
    NS,
    SIM_IMAGE,
    _args,
    _plan,
    lab_with_model,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

BAD_IMAGE = "registry.invalid/example/serving-sim:1.0"


def test_unpullable_serving_image_ends_the_wait_within_a_minute(lab_with_model, tmp_path):  # noqa: F811
    lab, model = lab_with_model
    planned = _plan(lab, tmp_path, model)
    started = time.monotonic()
    rc, result, out = run_module(lab, tmp_path, "ray_vllm_cluster", _args(
        planned, image=BAD_IMAGE, wait=True, wait_timeout=1800))
    took = time.monotonic() - started
    assert rc != 0, out[-3000:]
    assert took < 60, f"took {took:.0f}s"
    msg = result["msg"]
    assert f"the serving stack {NS}/" in msg and "cannot become ready: ImagePullBackOff" in msg
    assert f'Back-off pulling image "{BAD_IMAGE}"' in msg, msg
    core = client.CoreV1Api(api(lab))
    pod = result["pod"]
    waiting = core.read_namespaced_pod(pod, NS).status.container_statuses[0].state.waiting
    assert waiting.reason in ("ImagePullBackOff", "ErrImagePull")  # as the lab has it
    assert any(e.reason == "Failed" and BAD_IMAGE in e.message
               for e in core.list_namespaced_event(NS).items)

    clusters = sorted(c["metadata"]["name"] for c in custom(lab, "ray.io/v1", "rayclusters", NS)
                      if c["metadata"]["labels"].get("app.kubernetes.io/instance") == "llm")
    stuck = _pod_images(core, clusters)
    assert stuck and set(stuck.values()) == {BAD_IMAGE}, stuck

    # KubeRay does not replace a RayCluster's pods when its image changes (neither does
    # the lab's): the module rolls them. Check mode says so and touches no pod.
    good = _args(planned, wait=True, wait_timeout=300)
    rc, checked, out = run_module(lab, tmp_path, "ray_vllm_cluster", good,
                                  extra=("--check", "--diff"))
    assert rc == 0 and checked["changed"] is True, checked.get("msg") or out[-3000:]
    assert checked["rolled"] == clusters
    for name in clusters:
        assert set(checked["diff"]["before"][f"Pods/{name}"]["images"].values()) == {BAD_IMAGE}
        assert set(checked["diff"]["after"][f"Pods/{name}"]["images"].values()) == {SIM_IMAGE}
    assert _pod_images(core, clusters) == stuck

    # the same run as it is, no state=absent: the stuck pods are replaced and come up
    rc, result, out = run_module(lab, tmp_path, "ray_vllm_cluster", good)
    assert rc == 0, result.get("msg") or out[-3000:]
    assert result["changed"] is True and result["rolled"] == clusters == result["clusters"]
    images = _pod_images(core, result["clusters"])
    assert images and set(images.values()) == {SIM_IMAGE}, images
    assert not set(images) & set(stuck)  # new pods (uids), none of the stuck ones left
    assert all(p.status.phase == "Running" for p in core.list_namespaced_pod(
        NS, label_selector="ray.io/cluster in (" + ",".join(clusters) + ")").items
        if p.metadata.deletion_timestamp is None)

    # and once more: nothing changes, no pod is replaced
    rc, again, out = run_module(lab, tmp_path, "ray_vllm_cluster", good)
    assert rc == 0 and again["changed"] is False, again.get("msg") or out[-3000:]
    assert again["rolled"] == []
    assert _pod_images(core, result["clusters"]) == images


def _pod_images(core, clusters: list) -> dict:
    """uid -> image of every pod of the stack's RayClusters, read from the API server."""
    return {p.metadata.uid: p.spec.containers[0].image
            for p in core.list_namespaced_pod(NS).items
            if (p.metadata.labels or {}).get("ray.io/cluster") in clusters
            and p.metadata.deletion_timestamp is None}


def _cordon(core, on: bool) -> None:
    for node in core.list_node().items:
        core.patch_node(node.metadata.name, {"spec": {"unschedulable": on}})


def test_serving_pods_no_node_takes_end_the_wait_and_the_rerun_converges(
        lab_with_model, tmp_path):  # noqa: F811
    """No node takes the pods (all cordoned): the wait ends within a minute with the
    scheduler's message; once the nodes are back the same run converges as it is (no
    state=absent: the pending pods are scheduled) and a third run changes nothing."""
    lab, model = lab_with_model
    planned = _plan(lab, tmp_path, model)
    core = client.CoreV1Api(api(lab))
    args = _args(planned, name="held", wait=True, wait_timeout=1800)
    _cordon(core, True)
    try:
        started = time.monotonic()
        rc, result, out = run_module(lab, tmp_path, "ray_vllm_cluster", args)
        took = time.monotonic() - started
        assert rc != 0, out[-3000:]
        assert took < 60, f"took {took:.0f}s"
        msg = result["msg"]
        assert "cannot become ready: Unschedulable: 0/" in msg, msg
        assert "were unschedulable" in msg, msg
        scheduled = {c.type: c for c in core.read_namespaced_pod(
            result["pod"], NS).status.conditions}["PodScheduled"]  # before the nodes are back
        assert scheduled.status == "False" and scheduled.reason == "Unschedulable"
    finally:
        _cordon(core, False)

    rc, result, out = run_module(lab, tmp_path, "ray_vllm_cluster", args)
    assert rc == 0, result.get("msg") or out[-3000:]
    images = _pod_images(core, result["clusters"])
    assert images and set(images.values()) == {SIM_IMAGE}, images
    assert all(p.spec.node_name for p in core.list_namespaced_pod(
        NS, label_selector="ray.io/cluster in (" + ",".join(result["clusters"]) + ")").items)
    rc, again, out = run_module(lab, tmp_path, "ray_vllm_cluster", args)
    assert rc == 0 and again["changed"] is False, again.get("msg") or out[-3000:]
    assert _pod_images(core, result["clusters"]) == images
