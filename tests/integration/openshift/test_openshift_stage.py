"""playbooks/openshift.yml with the lab inventory, as the README's main command runs it:
from an empty cluster whose worker VMs have their GPUs to 16 allocatable GPUs."""

from __future__ import annotations

import json

import pytest
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from .k8s_helpers import (
    OLM,
    REPO,
    api,
    custom,
    lab_conflict,
    lab_faults,
    namespaces,
    node_labels,
    run_play,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def _stage(lab, tmp_path, *extra):
    return run_play(lab, tmp_path, playbook=REPO / "playbooks" / "openshift.yml",
                    inventory=str(REPO / "inventories" / "lab"), extra=extra,
                    env_extra={"GPU_LAB_HOME": str(lab.settings.home)})


def _stats(out: str) -> dict:
    return json.loads(out[:out.rindex("}") + 1])["stats"]["localhost"]


def _allocatable(lab) -> dict:
    core = client.CoreV1Api(api(lab))
    return {n.metadata.name: int((n.status.allocatable or {}).get("nvidia.com/gpu", "0"))
            for n in core.list_node().items}


def test_check_mode_then_install_then_no_change(k8s_lab_factory, tmp_path):
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    labels, spaces = node_labels(lab), namespaces(lab)

    rc, _tasks, out = _stage(lab, tmp_path, "--check")
    assert rc == 0, out[-3000:]
    assert node_labels(lab) == labels and namespaces(lab) == spaces

    # the role's own writes through kubernetes.core.k8s each meet one 409, and retry it
    lab_conflict(lab, "patch", "nodefeaturediscoveries.nfd.openshift.io", "openshift-nfd")
    lab_conflict(lab, "patch", "clusterpolicies.nvidia.com", None)
    rc, tasks, out = _stage(lab, tmp_path)
    assert rc == 0, out[-3000:]
    assert _stats(out)["changed"] > 0
    assert lab_faults(lab) == []  # both were served
    attempts = {t["result"]["kind"]: t.get("attempts") for t in tasks
                if (t.get("result") or {}).get("kind") in ("NodeFeatureDiscovery",
                                                           "ClusterPolicy")}
    assert attempts == {"NodeFeatureDiscovery": 2, "ClusterPolicy": 2}, attempts
    assert "Using a template for task args" not in out  # module args are passed key by key
    gpus = _allocatable(lab)
    assert sum(gpus.values()) == 16
    assert all(gpus[f"ocp-worker-{i}"] == 2 for i in range(8))
    for ns, package in (("openshift-nfd", "nfd"), ("nvidia-gpu-operator",
                                                   "gpu-operator-certified"),
                        ("kuberay-operator", "kuberay-operator")):
        subs = custom(lab, OLM, "subscriptions", ns)
        assert [s["spec"]["name"] for s in subs] == [package]
        assert subs[0]["spec"]["installPlanApproval"] == "Manual"
        phases = {c["metadata"]["name"]: c["status"]["phase"]
                  for c in custom(lab, OLM, "clusterserviceversions", ns)}
        assert phases == {subs[0]["spec"]["startingCSV"]: "Succeeded"}
    policy = client.CustomObjectsApi(api(lab)).list_cluster_custom_object(
        "nvidia.com", "v1", "clusterpolicies")["items"]
    assert [p["status"]["state"] for p in policy] == ["ready"]

    rc, _tasks, out = _stage(lab, tmp_path)
    assert rc == 0, out[-3000:]
    assert _stats(out)["changed"] == 0
