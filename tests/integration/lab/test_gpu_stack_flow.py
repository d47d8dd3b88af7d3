"""The OpenShift side of the GPU stack in the lab, in order: OLM installs NFD, the GPU
Operator and KubeRay (Manual approval), NFD + ClusterPolicy make exactly the nodes whose
VMs have GPUs allocatable, and a RayCluster wanting more GPUs than exist stays partly
Pending with the scheduler's reason. Read back through the API, never from the lab's
internals."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from gpu_lab.apiserver.server import LabServer
from gpu_lab.fixtures.k8s import dynamic_client
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from .waiting import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow]
OLM = "operators.coreos.com"


@pytest.fixture(scope="module")
def inventory() -> StaticGpuInventory:
    site = reference_site()
    site.pop("ocp-worker-7")  # one worker VM without GPUs
    return StaticGpuInventory(site)


@pytest.fixture(scope="module")
def lab(k8s_lab_factory: Callable[..., LabServer], inventory: StaticGpuInventory) -> LabServer:
    return k8s_lab_factory(gpu_inventory=inventory)


@pytest.fixture(scope="module", name="dyn")
def _dyn(lab: LabServer) -> Any:
    return dynamic_client(lab)


def _res(dyn: Any, api_version: str, kind: str) -> Any:
    return dyn.resources.get(api_version=api_version, kind=kind)


def _subscribe(dyn: Any, ns: str, package: str, source: str, channel: str,
               starting: str | None = None) -> None:
    core = client.CoreV1Api(dyn.client)
    core.create_namespace({"metadata": {"name": ns}})
    _res(dyn, f"{OLM}/v1", "OperatorGroup").create(body={
        "apiVersion": f"{OLM}/v1", "kind": "OperatorGroup",
        "metadata": {"name": ns, "namespace": ns}, "spec": {"targetNamespaces": [ns]}})
    spec = {"channel": channel, "name": package, "source": source,
            "sourceNamespace": "openshift-marketplace", "installPlanApproval": "Manual"}
    if starting:
        spec["startingCSV"] = starting
    _res(dyn, f"{OLM}/v1alpha1", "Subscription").create(body={
        "apiVersion": f"{OLM}/v1alpha1", "kind": "Subscription",
        "metadata": {"name": package, "namespace": ns}, "spec": spec})


def _approve(dyn: Any, ns: str, package: str) -> str:
    subs = _res(dyn, f"{OLM}/v1alpha1", "Subscription")
    sub = wait_for(lambda: (s := subs.get(name=package, namespace=ns)).status
                   and s.status.installPlanRef and s, f"install plan of {package}")
    plans = _res(dyn, f"{OLM}/v1alpha1", "InstallPlan")
    name = sub.status.installPlanRef.name
    plan = wait_for(lambda: (p := plans.get(name=name, namespace=ns)).status and p,
                    f"status of {name}")
    assert plan.status.phase == "RequiresApproval" and plan.spec.approved is False
    plans.patch(name=name, namespace=ns, body={"spec": {"approved": True}},
                content_type="application/merge-patch+json")
    return sub.status.currentCSV


def _csv_phase(dyn: Any, ns: str, name: str) -> str:
    csvs = _res(dyn, f"{OLM}/v1alpha1", "ClusterServiceVersion")
    try:
        found = csvs.get(name=name, namespace=ns)
    except client.ApiException:
        return ""
    return (found.status or {}).get("phase", "")


def test_manual_subscription_waits_for_approval_then_installs(lab: LabServer, dyn: Any
                                                              ) -> None:
    _subscribe(dyn, "nvidia-gpu-operator", "gpu-operator-certified", "certified-operators",
               "v25.3", "gpu-operator-certified.v25.3.0")
    subs = _res(dyn, f"{OLM}/v1alpha1", "Subscription")
    # OLM has processed the Subscription: its InstallPlan waits for approval; nothing else
    # may happen while it is unapproved
    sub = wait_for(lambda: (s := subs.get(name="gpu-operator-certified",
                                          namespace="nvidia-gpu-operator")).status.state
                   == "UpgradePending" and s, "subscription UpgradePending")
    pending = [c for c in sub.status.conditions if c.type == "InstallPlanPending"]
    assert pending and pending[0].reason == "RequiresApproval"
    assert _csv_phase(dyn, "nvidia-gpu-operator", "gpu-operator-certified.v25.3.0") == ""
    with pytest.raises(ResourceNotFoundError):
        dyn.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy")
    csv = _approve(dyn, "nvidia-gpu-operator", "gpu-operator-certified")
    assert csv == "gpu-operator-certified.v25.3.0"
    wait_for(lambda: _csv_phase(dyn, "nvidia-gpu-operator", csv) == "Succeeded", "CSV Succeeded")
    dyn.client.rest_client  # noqa: B018 - same client, fresh discovery below
    fresh = dynamic_client(lab, dyn.client)
    policies = fresh.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy")
    assert policies.get().items == []
    ext = client.ApiextensionsV1Api(dyn.client)
    crd = ext.read_custom_resource_definition("clusterpolicies.nvidia.com")
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    found = _res(dyn, f"{OLM}/v1alpha1", "ClusterServiceVersion").get(
        name=csv, namespace="nvidia-gpu-operator")
    examples = json.loads(found.metadata.annotations["alm-examples"])
    assert examples[0]["kind"] == "ClusterPolicy"
    sub = wait_for(lambda: (s := subs.get(name="gpu-operator-certified",
                                          namespace="nvidia-gpu-operator")).status.installedCSV
                   and s, "installedCSV")
    assert sub.status.installedCSV == csv
    # the channel head is newer: OLM proposes the upgrade and waits for approval again
    assert sub.status.currentCSV == "gpu-operator-certified.v25.3.1"
    assert sub.status.state == "UpgradePending"


def test_nfd_and_cluster_policy_make_gpu_nodes_allocatable(
        lab: LabServer, dyn: Any, inventory: StaticGpuInventory) -> None:
    _subscribe(dyn, "openshift-nfd", "nfd", "redhat-operators", "stable")
    csv = _approve(dyn, "openshift-nfd", "nfd")
    wait_for(lambda: _csv_phase(dyn, "openshift-nfd", csv) == "Succeeded", "NFD CSV")
    fresh = dynamic_client(lab, dyn.client)
    nfd_example = json.loads(_res(fresh, f"{OLM}/v1alpha1", "ClusterServiceVersion").get(
        name=csv, namespace="openshift-nfd").metadata.annotations["alm-examples"])[0]
    fresh.resources.get(api_version="nfd.openshift.io/v1", kind="NodeFeatureDiscovery").create(
        body=nfd_example, namespace="openshift-nfd")
    gpu_csv = _res(fresh, f"{OLM}/v1alpha1", "ClusterServiceVersion").get(
        name="gpu-operator-certified.v25.3.0", namespace="nvidia-gpu-operator")
    policy = json.loads(gpu_csv.metadata.annotations["alm-examples"])[0]
    policies = fresh.resources.get(api_version="nvidia.com/v1", kind="ClusterPolicy")
    policies.server_side_apply(policy, field_manager="llmops-gpu-stack")
    core = client.CoreV1Api(dyn.client)

    def allocatable() -> dict[str, str]:
        return {n.metadata.name: (n.status.allocatable or {}).get("nvidia.com/gpu", "0")
                for n in core.list_node().items}

    expected = {f"ocp-worker-{i}": "2" for i in range(7)}
    expected.update({"ocp-worker-7": "0", "ocp-master-0": "0", "ocp-master-1": "0",
                     "ocp-master-2": "0"})
    wait_for(lambda: allocatable() == expected, "GPU allocatable on exactly 7 workers")
    labelled = core.list_node(label_selector="feature.node.kubernetes.io/pci-10de.present=true")
    assert sorted(n.metadata.name for n in labelled.items) == [f"ocp-worker-{i}"
                                                               for i in range(7)]
    node = core.read_node("ocp-worker-0")
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-80GB-PCIe"
    assert node.metadata.labels["nvidia.com/gpu.count"] == "2"
    wait_for(lambda: policies.get(name="gpu-cluster-policy").status.state == "ready",
             "ClusterPolicy ready")
    inventory.remove_gpus("ocp-worker-3")
    wait_for(lambda: allocatable()["ocp-worker-3"] == "0", "worker-3 losing its GPUs", 30)
    node = core.read_node("ocp-worker-3")
    assert "feature.node.kubernetes.io/pci-10de.present" not in node.metadata.labels
    assert "nvidia.com/gpu" not in node.status.capacity
    inventory.set("ocp-worker-3", 2)
    wait_for(lambda: allocatable()["ocp-worker-3"] == "2", "worker-3 back", 30)


def test_raycluster_wanting_too_many_gpus_stays_partly_pending(lab: LabServer, dyn: Any
                                                               ) -> None:
    _subscribe(dyn, "kuberay", "kuberay-operator", "community-operators", "stable")
    csv = _approve(dyn, "kuberay", "kuberay-operator")
    wait_for(lambda: _csv_phase(dyn, "kuberay", csv) == "Succeeded", "KubeRay CSV")
    core = client.CoreV1Api(dyn.client)
    core.create_namespace({"metadata": {"name": "llm"}})
    worker = {"name": "ray-worker", "image": "registry.example.com/llmops/ray-vllm:latest",
              "resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "8", "memory": "32Gi"}}}
    body = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "llm"},
            "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": "registry.example.com/llmops/ray-vllm:latest",
                 "resources": {"limits": {"cpu": "4", "memory": "16Gi"}}}]}}},
                "workerGroupSpecs": [{"groupName": "gpu", "replicas": 9, "minReplicas": 0,
                                      "maxReplicas": 16, "rayStartParams": {},
                                      "template": {"spec": {"containers": [worker]}}}]}}
    fresh = dynamic_client(lab, dyn.client)
    rcs = fresh.resources.get(api_version="ray.io/v1", kind="RayCluster")
    rcs.create(body=body, namespace="llm")

    def workers() -> list[Any]:
        return core.list_namespaced_pod("llm", label_selector="ray.io/node-type=worker").items

    wait_for(lambda: len([p for p in workers() if p.status.phase == "Running"]) == 7 and len(
        [p for p in workers() if p.status.phase == "Pending"]) == 2, "7 running, 2 pending")
    pending = [p for p in workers() if p.status.phase == "Pending"]
    scheduled = next(c for c in pending[0].status.conditions if c.type == "PodScheduled")
    assert scheduled.status == "False" and scheduled.reason == "Unschedulable"
    assert scheduled.message.startswith("0/11 nodes are available: ")
    assert "8 Insufficient nvidia.com/gpu" in scheduled.message
    assert "3 node(s) had untolerated taint {node-role.kubernetes.io/master: }" in (
        scheduled.message)
    rc = wait_for(lambda: (r := rcs.get(name="llm", namespace="llm")).status and
                  r.status.readyWorkerReplicas == 7 and r, "RayCluster status")
    assert rc.status.desiredWorkerReplicas == 9 and rc.status.desiredGPU == "18"
    assert rc.status.get("state") != "ready"
    events = core.list_namespaced_event("llm", field_selector="reason=FailedScheduling")
    assert events.items and "Insufficient nvidia.com/gpu" in events.items[0].message
    rcs.patch(name="llm", namespace="llm", content_type="application/merge-patch+json",
              body={"spec": {"workerGroupSpecs": [{"groupName": "gpu", "replicas": 7,
                                                   "minReplicas": 0, "maxReplicas": 16,
                                                   "rayStartParams": {},
                                                   "template": {"spec": {"containers": [
                                                       worker]}}}]}})
    rc = wait_for(lambda: (r := rcs.get(name="llm", namespace="llm")).status.get(
        "state") == "ready" and r, "RayCluster ready after scaling to what fits")
    assert rc.status.head.serviceName == "llm-head-svc"


def test_publish_newer_csv_and_fail_one(lab: LabServer, dyn: Any) -> None:
    url, ca = lab.url, str(lab.settings.k8s_dir / "ca.crt")
    headers = {"Authorization": f"Bearer {lab.admin_token}"}
    requests.post(f"{url}/lab/olm/fail", json={"csv": "kuberay-operator.v1.5.0",
                                               "message": "deployment kuberay-operator failed"},
                  headers=headers, verify=ca, timeout=10).raise_for_status()
    published = requests.post(f"{url}/lab/olm/publish", json={
        "package": "kuberay-operator", "channel": "stable", "version": "1.5.0"},
        headers=headers, verify=ca, timeout=10).json()
    assert published == {"published": "kuberay-operator.v1.5.0",
                         "replaces": "kuberay-operator.v1.4.2"}
    manifest = _res(dyn, "packages.operators.coreos.com/v1", "PackageManifest").get(
        name="kuberay-operator", namespace="openshift-marketplace")
    stable = next(c for c in manifest.status.channels if c.name == "stable")
    assert stable.currentCSV == "kuberay-operator.v1.5.0"
    subs = _res(dyn, f"{OLM}/v1alpha1", "Subscription")
    wait_for(lambda: subs.get(name="kuberay-operator", namespace="kuberay").status.currentCSV
             == "kuberay-operator.v1.5.0", "upgrade proposed")
    _approve(dyn, "kuberay", "kuberay-operator")
    wait_for(lambda: _csv_phase(dyn, "kuberay", "kuberay-operator.v1.5.0") == "Failed",
             "CSV failing")
    found = _res(dyn, f"{OLM}/v1alpha1", "ClusterServiceVersion").get(
        name="kuberay-operator.v1.5.0", namespace="kuberay")
    assert found.status.reason == "InstallComponentFailed"
    assert found.status.message == "deployment kuberay-operator failed"
