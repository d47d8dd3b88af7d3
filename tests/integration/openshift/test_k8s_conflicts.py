"""A 409 injected by the lab API server into each Kubernetes write path is retried.

The write paths of K8sClient are server-side apply (PATCH) and delete; the lab answers
the next matching request with the real server's 409 ("the object has been modified").
Reads back go through the kubernetes client, not K8sClient; the lab's fault list shows
that each fault was really served. Then a whole model_stage run with a 409 on its
first write of each kind, and on the PVC's record (a write with a precondition), converges.
Every write of every stage, one 409 each: tests/unit/.../k8s/test_conflict_every_write.py."""

from __future__ import annotations

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.client import K8sClient
from kubernetes import client

from .k8s_helpers import api, lab_conflict, lab_faults, lab_post, run_module
from .test_wait_faults import _staged, web  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.lab


def test_apply_and_delete_are_retried_after_a_409(k8s_lab, k8s_namespace):
    k8s = K8sClient.from_params({"kubeconfig": str(k8s_lab.kubeconfig),
                                 "context": "lab-admin"})
    core = client.CoreV1Api(api(k8s_lab))
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
          "metadata": {"name": "c", "namespace": k8s_namespace}}

    lab_conflict(k8s_lab, "patch", "configmaps", k8s_namespace)  # the create, by apply
    assert k8s.apply(cm, check_mode=False).changed
    assert lab_faults(k8s_lab) == []  # served, then retried
    assert core.read_namespaced_config_map("c", k8s_namespace).data == {"a": "1"}

    lab_conflict(k8s_lab, "patch", "configmaps", k8s_namespace)  # an update, by apply
    assert k8s.apply({**cm, "data": {"a": "2"}}, check_mode=False).changed
    assert lab_faults(k8s_lab) == []
    assert core.read_namespaced_config_map("c", k8s_namespace).data == {"a": "2"}

    lab_conflict(k8s_lab, "delete", "configmaps", k8s_namespace)
    assert k8s.delete("v1", "ConfigMap", "c", k8s_namespace, check_mode=False)
    assert lab_faults(k8s_lab) == []
    assert [c.metadata.name for c in core.list_namespaced_config_map(k8s_namespace).items
            if c.metadata.name == "c"] == []


def test_an_eviction_is_retried_after_a_409(k8s_lab, k8s_namespace):
    """The drain's write: POST pods/<name>/eviction answered once with 409, sent again."""
    k8s = K8sClient.from_params({"kubeconfig": str(k8s_lab.kubeconfig),
                                 "context": "lab-admin"})
    core = client.CoreV1Api(api(k8s_lab))
    core.create_namespaced_pod(k8s_namespace, {
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/example/web:1"}]}})
    lab_post(k8s_lab, "/lab/faults", {"verb": "create", "resource": "pods", "code": 409,
                                      "namespace": k8s_namespace, "name": "web"})
    assert k8s.evict("web", k8s_namespace, grace_period=0) == ""
    assert lab_faults(k8s_lab) == []  # served, then retried
    left = [p for p in core.list_namespaced_pod(k8s_namespace).items
            if p.metadata.name == "web" and p.metadata.deletion_timestamp is None]
    assert left == []


def test_an_apply_with_a_precondition_is_left_to_its_caller(k8s_lab, k8s_namespace):
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
        ConflictError,
    )

    k8s = K8sClient.from_params({"kubeconfig": str(k8s_lab.kubeconfig),
                                 "context": "lab-admin"})
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
          "metadata": {"name": "c", "namespace": k8s_namespace}}
    first = k8s.apply(cm, check_mode=False).after
    core = client.CoreV1Api(api(k8s_lab))
    core.patch_namespaced_config_map("c", k8s_namespace, {"data": {"b": "other writer"}})
    stale = {**cm, "metadata": {**cm["metadata"],
                                "resourceVersion": first["metadata"]["resourceVersion"]}}
    with pytest.raises(ConflictError):
        k8s.apply({**stale, "data": {"a": "mine"}}, check_mode=False)
    assert core.read_namespaced_config_map("c", k8s_namespace).data == {
        "a": "1", "b": "other writer"}  # nothing of the stale write landed


def test_model_stage_converges_through_a_409_on_each_kind_it_writes(k8s_lab, tmp_path,
                                                                     k8s_namespace, web):  # noqa: F811
    ns = k8s_namespace
    for resource in ("persistentvolumeclaims", "secrets", "jobs.batch"):
        lab_conflict(k8s_lab, "patch", resource, ns)
    lab_conflict(k8s_lab, "delete", "secrets", ns)  # the run's credentials Secret, at the end
    # the PVC's record, written with a precondition (resourceVersion): the module re-reads
    # and writes again (the PVC's create and its retry, both let through, come first)
    lab_conflict(k8s_lab, "patch", "persistentvolumeclaims", ns, skip=1)
    _root, url = web
    args = {"namespace": ns, "model_dir": "m",
            "pvc": {"name": "models", "storage_class": "nfs-csi", "size": "1Gi"},
            "source": {"type": "http", "url": url, "manifest": f"{url}/manifest.json"},
            "credentials": {"token": "t0ken"}}
    rc, result, out = run_module(k8s_lab, tmp_path, "model_stage", args)
    assert rc == 0, out[-3000:]
    assert [f for f in lab_faults(k8s_lab) if f["namespace"] == ns] == []  # each one was served
    assert _staged(k8s_lab, ns) == {"config.json", "weights.bin"}
    record = client.CoreV1Api(api(k8s_lab)).read_namespaced_persistent_volume_claim(
        "models", ns).metadata.annotations
    assert list(json.loads(record["gpu-stack.llmops.io/staged"])) == ["m"]
    assert client.CoreV1Api(api(k8s_lab)).list_namespaced_secret(
        ns, label_selector="app.kubernetes.io/component=model-stager-credentials").items == []
    rc, result, out = run_module(k8s_lab, tmp_path, "model_stage", args)
    assert rc == 0 and result["changed"] is False, out[-3000:]
