"""Kubelet, scheduler, Jobs, storage, Routes and namespaces in the session lab."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from gpu_lab.controllers.runtime import ContainerState, FakeRuntime
from kubernetes import client, watch

from .waiting import wait_for

pytestmark = pytest.mark.lab


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "main", "image": "registry.local/app:1"}])
    return {"metadata": {"name": name, **spec.pop("meta", {})},
            "spec": {"containers": containers, **spec}}


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_pod_goes_pending_running_ready_with_probe_delay(k8s_client: Any, k8s_namespace: str
                                                         ) -> None:
    core = client.CoreV1Api(k8s_client)
    seen: list[tuple[str, bool]] = []
    done = threading.Event()
    # from this resourceVersion on: the watch sees the pod's first state however late it starts
    start = core.list_namespaced_pod(k8s_namespace).metadata.resource_version

    def follow() -> None:
        for event in watch.Watch().stream(core.list_namespaced_pod, k8s_namespace,
                                          resource_version=start, timeout_seconds=15):
            pod = event["object"]
            seen.append((pod.status.phase, _ready(pod)))
            if _ready(pod):
                break
        done.set()

    thread = threading.Thread(target=follow)
    thread.start()
    probe = {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 50,
             "periodSeconds": 10}
    core.create_namespaced_pod(k8s_namespace, _pod("probed", containers=[
        {"name": "main", "image": "registry.local/app:1", "readinessProbe": probe}]))
    assert done.wait(20)
    thread.join()
    assert seen[0] == ("Pending", False)
    assert ("Running", False) in seen and seen[-1] == ("Running", True)
    pod = core.read_namespaced_pod("probed", k8s_namespace)
    assert pod.spec.node_name.startswith("ocp-worker-")
    assert pod.status.pod_ip and pod.status.container_statuses[0].ready
    logs = core.read_namespaced_pod_log("probed", k8s_namespace)
    assert "simulated" in logs


def test_jobs_complete_or_fail(k8s_client: Any, k8s_namespace: str) -> None:
    batch = client.BatchV1Api(k8s_client)
    template = {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "stage", "image": "registry.local/stager:1"}]}}
    batch.create_namespaced_job(k8s_namespace, {"metadata": {"name": "ok"},
                                                "spec": {"template": template}})
    failing = {"metadata": {"annotations": {"gpu-lab.llmops.io/exit-code": "3"}}, **template}
    batch.create_namespaced_job(k8s_namespace, {"metadata": {"name": "bad"},
                                                "spec": {"backoffLimit": 1, "template": failing}})

    def condition(name: str, kind: str) -> Any:
        job = batch.read_namespaced_job(name, k8s_namespace)
        conditions = (job.status.conditions if job.status else None) or []
        return next((c for c in conditions if c.type == kind), None)

    assert wait_for(lambda: condition("ok", "Complete"), "job ok Complete").status == "True"
    assert batch.read_namespaced_job("ok", k8s_namespace).status.succeeded == 1
    failed = wait_for(lambda: condition("bad", "Failed"), "job bad Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert batch.read_namespaced_job("bad", k8s_namespace).status.failed == 2


def test_claims_bind_by_class_and_access_mode(k8s_client: Any, k8s_namespace: str,
                                              k8s_lab: LabServer) -> None:
    core = client.CoreV1Api(k8s_client)

    def claim(name: str, sc: str, mode: str) -> None:
        core.create_namespaced_persistent_volume_claim(k8s_namespace, {
            "metadata": {"name": name}, "spec": {"accessModes": [mode], "storageClassName": sc,
                                                 "resources": {"requests": {"storage": "5Gi"}}}})

    claim("models", "nfs-csi", "ReadWriteMany")
    claim("nope", "thin-csi", "ReadWriteMany")
    claim("later", "thin-csi", "ReadWriteOnce")
    bound = wait_for(lambda: (c := core.read_namespaced_persistent_volume_claim(
        "models", k8s_namespace)).status.phase == "Bound" and c, "RWX claim bound")
    pv = core.read_persistent_volume(bound.spec.volume_name)
    local = Path(pv.metadata.annotations["gpu-lab.llmops.io/local-path"])
    assert local.is_dir() and local.is_relative_to(k8s_lab.settings.home)
    assert pv.spec.access_modes == ["ReadWriteMany"] and pv.spec.csi.driver == "nfs.csi.k8s.io"
    events = wait_for(lambda: core.list_namespaced_event(
        k8s_namespace, field_selector="involvedObject.name=nope,reason=ProvisioningFailed").items,
        "ProvisioningFailed event")
    assert "ReadWriteMany is not supported" in events[0].message
    assert core.read_namespaced_persistent_volume_claim("later", k8s_namespace).status.phase == \
        "Pending"  # WaitForFirstConsumer
    core.create_namespaced_pod(k8s_namespace, _pod("consumer", volumes=[
        {"name": "data", "persistentVolumeClaim": {"claimName": "later"}}]))
    wait_for(lambda: core.read_namespaced_persistent_volume_claim(
        "later", k8s_namespace).status.phase == "Bound", "first consumer binds the claim")
    wait_for(lambda: core.read_namespaced_pod("consumer", k8s_namespace).status.phase ==
             "Running", "consumer running")
    assert core.read_namespaced_persistent_volume_claim("nope", k8s_namespace).status.phase == \
        "Pending"


def test_read_write_once_claim_cannot_attach_on_two_nodes(k8s_client: Any, k8s_namespace: str
                                                          ) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_persistent_volume_claim(k8s_namespace, {
        "metadata": {"name": "rwo"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                              "storageClassName": "thin-csi",
                                              "resources": {"requests": {"storage": "1Gi"}}}})
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "rwo"}}]
    core.create_namespaced_pod(k8s_namespace, _pod(
        "first", volumes=volumes, nodeSelector={"kubernetes.io/hostname": "ocp-worker-1"}))
    wait_for(lambda: core.read_namespaced_pod("first", k8s_namespace).status.phase == "Running",
             "first pod running")
    core.create_namespaced_pod(k8s_namespace, _pod(
        "second", volumes=volumes, nodeSelector={"kubernetes.io/hostname": "ocp-worker-2"}))
    events = wait_for(lambda: core.list_namespaced_event(
        k8s_namespace, field_selector="involvedObject.name=second,reason=FailedAttachVolume"
    ).items, "Multi-Attach event")
    assert "Multi-Attach error" in events[0].message and "first" in events[0].message
    second = core.read_namespaced_pod("second", k8s_namespace)
    assert second.status.phase == "Pending"
    assert second.status.container_statuses[0].state.waiting.reason == "ContainerCreating"


def test_route_host_service_account_and_namespace_deletion(k8s_client: Any,
                                                           k8s_dynamic: Any) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespace({"metadata": {"name": "short-lived"}})
    wait_for(lambda: [s.metadata.name for s in core.list_namespaced_service_account(
        "short-lived").items] == ["builder", "default", "deployer"], "service accounts")
    routes = k8s_dynamic.resources.get(api_version="route.openshift.io/v1", kind="Route")
    routes.create(namespace="short-lived", body={
        "apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "api"},
        "spec": {"to": {"kind": "Service", "name": "api"}, "tls": {"termination": "edge"}}})
    route = wait_for(lambda: (r := routes.get(name="api", namespace="short-lived")).status and r,
                     "route admitted")
    assert route.spec.host == "api-short-lived.apps.ocp.gpu-lab.local"
    assert route.status.ingress[0].conditions[0].type == "Admitted"
    core.create_namespaced_config_map("short-lived", {"metadata": {"name": "c",
                                                                   "finalizers": ["lab/x"]}})
    core.delete_namespace("short-lived")
    assert core.read_namespace("short-lived").status.phase == "Terminating"
    # the namespace controller has processed the deletion: the rest of the content is gone
    # and "c" is marked for deletion; its finalizer holds it, and with it the namespace
    wait_for(lambda: core.read_namespaced_config_map("c", "short-lived").metadata
             .deletion_timestamp and not core.list_namespaced_service_account(
                 "short-lived").items, "the namespace's content deleted but c")
    assert core.read_namespace("short-lived").status.phase == "Terminating"
    core.patch_namespaced_config_map("c", "short-lived", {"metadata": {"finalizers": None}})

    def gone() -> bool:
        try:
            core.read_namespace("short-lived")
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, "namespace removed")


class _Recorder(FakeRuntime):
    """A runtime that records what the kubelet hands over (the real-process hook)."""

    def __init__(self) -> None:
        super().__init__(0.02)
        self.mounts: dict[str, dict[str, Path]] = {}

    def start(self, pod: dict[str, Any], mounts: dict[str, dict[str, Path]]) -> None:
        self.mounts = mounts
        super().start(pod, mounts)

    def poll(self, pod: dict[str, Any]) -> dict[str, ContainerState]:
        states = super().poll(pod)
        return {k: ContainerState(running=False, exit_code=0, started_at=v.started_at)
                for k, v in states.items()}


def test_kubelet_hands_selected_pods_to_a_registered_runtime(
        k8s_lab: LabServer, k8s_client: Any, k8s_namespace: str) -> None:
    recorder = _Recorder()
    kubelet = k8s_lab.controllers.get("kubelet")
    k8s_lab.call(kubelet.register_runtime, "recorder", recorder)
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_persistent_volume_claim(k8s_namespace, {
        "metadata": {"name": "weights"}, "spec": {"accessModes": ["ReadWriteMany"],
                                                  "storageClassName": "nfs-csi",
                                                  "resources": {"requests": {"storage": "1Gi"}}}})
    core.create_namespaced_config_map(k8s_namespace, {"metadata": {"name": "cfg"},
                                                      "data": {"model.json": "{}"}})
    core.create_namespaced_pod(k8s_namespace, _pod(
        "stager", restartPolicy="Never",
        meta={"annotations": {"gpu-lab.llmops.io/runtime": "recorder"}},
        containers=[{"name": "main", "image": "registry.local/stager:1", "volumeMounts": [
            {"name": "w", "mountPath": "/models"}, {"name": "c", "mountPath": "/etc/cfg"}]}],
        volumes=[{"name": "w", "persistentVolumeClaim": {"claimName": "weights"}},
                 {"name": "c", "configMap": {"name": "cfg"}}]))
    wait_for(lambda: core.read_namespaced_pod("stager", k8s_namespace).status.phase ==
             "Succeeded", "pod run by the recorder")
    mounts = recorder.mounts["main"]
    claim = core.read_namespaced_persistent_volume_claim("weights", k8s_namespace)
    pv = core.read_persistent_volume(claim.spec.volume_name)
    assert mounts["/models"] == Path(pv.metadata.annotations["gpu-lab.llmops.io/local-path"])
    assert (mounts["/etc/cfg"] / "model.json").read_text() == "{}"


def test_refused_pods_show_as_failed_create_events(k8s_client: Any, k8s_namespace: str) -> None:
    apps = client.AppsV1Api(k8s_client)
    apps.create_namespaced_deployment(k8s_namespace, {"metadata": {"name": "root"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "root"}},
        "template": {"metadata": {"labels": {"app": "root"}}, "spec": {"containers": [
            {"name": "c", "image": "x:1", "securityContext": {"runAsUser": 0}}]}}}})
    core = client.CoreV1Api(k8s_client)
    events = wait_for(lambda: core.list_namespaced_event(
        k8s_namespace, field_selector="reason=FailedCreate").items, "FailedCreate event")
    assert events[0].involved_object.kind == "ReplicaSet"
    assert "unable to validate against any security context constraint" in events[0].message
    assert core.list_namespaced_pod(k8s_namespace).items == []


def test_service_endpoints_follow_ready_pods(k8s_client: Any, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_service(k8s_namespace, {"metadata": {"name": "api"}, "spec": {
        "selector": {"app": "api"}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})
    svc = core.read_namespaced_service("api", k8s_namespace)
    assert svc.spec.cluster_ip.startswith("172.30.")
    core.create_namespaced_pod(k8s_namespace, _pod("api-0", meta={"labels": {"app": "api"}}))
    endpoints = wait_for(lambda: (e := core.read_namespaced_endpoints("api", k8s_namespace))
                         .subsets and e.subsets[0].addresses and e, "ready endpoint")
    pod = core.read_namespaced_pod("api-0", k8s_namespace)
    assert endpoints.subsets[0].addresses[0].ip == pod.status.pod_ip
    assert endpoints.subsets[0].ports[0].port == 8000


class _Crasher(FakeRuntime):
    """Containers that exit with an error as soon as they start."""

    def poll(self, pod: dict[str, Any]) -> dict[str, ContainerState]:
        states = super().poll(pod)
        return {k: ContainerState(running=False, exit_code=2, started_at=v.started_at)
                for k, v in states.items()}


def test_crashing_containers_back_off_and_restart(k8s_lab: LabServer, k8s_client: Any,
                                                  k8s_namespace: str) -> None:
    kubelet = k8s_lab.controllers.get("kubelet")
    k8s_lab.call(kubelet.register_runtime, "crasher", _Crasher(0.02))
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_pod(k8s_namespace, _pod(
        "crashy", meta={"annotations": {"gpu-lab.llmops.io/runtime": "crasher"}}))

    def restarts() -> Any:
        pod = core.read_namespaced_pod("crashy", k8s_namespace)
        status = (pod.status.container_statuses or [None])[0]
        return status if status is not None and status.restart_count >= 2 else None

    status = wait_for(restarts, "two restarts")
    pod = core.read_namespaced_pod("crashy", k8s_namespace)
    assert pod.status.phase == "Running" and not _ready(pod)
    assert status.last_state.terminated.exit_code == 2
    if status.state.waiting is not None:
        assert status.state.waiting.reason == "CrashLoopBackOff"
    events = core.list_namespaced_event(k8s_namespace, field_selector="reason=BackOff").items
    assert events and events[0].involved_object.name == "crashy"


def test_on_failure_job_fails_after_backoff_limit_restarts(k8s_client: Any,
                                                           k8s_namespace: str) -> None:
    batch = client.BatchV1Api(k8s_client)
    batch.create_namespaced_job(k8s_namespace, {"metadata": {"name": "flaky"}, "spec": {
        "backoffLimit": 1, "template": {
            "metadata": {"annotations": {"gpu-lab.llmops.io/exit-code": "1",
                                         "gpu-lab.llmops.io/run-seconds": "0"}},
            "spec": {"restartPolicy": "OnFailure",
                     "containers": [{"name": "c", "image": "registry.local/stager:1"}]}}}})

    def failed() -> Any:
        job = batch.read_namespaced_job("flaky", k8s_namespace)
        conditions = (job.status.conditions if job.status else None) or []
        return next((c for c in conditions if c.type == "Failed"), None)

    assert wait_for(failed, "OnFailure job failing").reason == "BackoffLimitExceeded"
