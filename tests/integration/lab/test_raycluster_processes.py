"""A KubeRay RayCluster of the collection's image running for real in the lab: the head
pod runs KubeRay's generated ``ray start --head``, the worker pod ``gpu-stack-launch
worker``, which joins through the head Service's DNS name (rewritten to the head pod's
IP: the lab has no DNS). Checked from outside: a separate Ray driver lists the nodes."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from kubernetes import client

from .test_process_network import free_port, is_ready, pod_ip_env
from .waiting import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="needs the serving dependency group (ray)")]
IMAGE = "registry.example.com/llmops/ray-vllm:0.1.0"


def _group(command: list[str], args: list[str], env: list[dict[str, Any]],
           params: dict[str, str], **container: Any) -> dict[str, Any]:
    return {"rayStartParams": params, "template": {"spec": {
        "terminationGracePeriodSeconds": 5, "containers": [{
            "name": "ray", "image": IMAGE, "command": command, "args": args, "env": env,
            **container}]}}}


def _worker() -> dict[str, Any]:
    """One worker of 1 GPU running the collection's launcher, as the serving stage does."""
    env = [{"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"},
           {"name": "GLOO_SOCKET_IFNAME", "value": "eth0"}]
    worker = _group(["gpu-stack-launch"], ["worker"], env, {"num-cpus": "1", "num-gpus": "1"})
    worker.update(groupName="gpu", replicas=1, minReplicas=1, maxReplicas=1)
    return worker


def _register_crd(lab: LabServer, api: Any) -> None:
    crd = lab.crd_library.get("rayclusters.ray.io")
    if crd is None:
        pytest.skip("upstream KubeRay CRDs not available (GPU_LAB_CRDS)")
    ext = client.ApiextensionsV1Api(api)
    if not any(c.metadata.name == "rayclusters.ray.io"
               for c in ext.list_custom_resource_definition().items):
        ext.create_custom_resource_definition(crd)


def _ray_nodes(address: str) -> list[list[Any]]:
    """Ask the cluster itself, from a separate driver process."""
    code = textwrap.dedent(f"""
        import json, ray
        ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
        print(json.dumps(sorted([n["NodeManagerAddress"], n["Resources"].get("GPU", 0)]
                                for n in ray.nodes() if n["Alive"])))
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120, env=env | {"RAY_USAGE_STATS_ENABLED": "0"}
                         ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _processes_of(pod_name: str) -> list[int]:
    """Processes running for the pod: the lab sets HOSTNAME to the pod name in the
    container's environment, and every child inherits it."""
    marker = f"HOSTNAME={pod_name}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


def test_raycluster_head_and_worker_join_through_the_service_name(
        k8s_lab: LabServer, k8s_client: Any, k8s_dynamic: Any, k8s_namespace: str) -> None:
    _register_crd(k8s_lab, k8s_client)
    ns, gcs, ray_client = k8s_namespace, free_port(), free_port()
    # Ports other Rays on this machine may hold (the GCS listens on every address)
    head_params = {"port": str(gcs), "ray-client-server-port": str(ray_client),
                   "include-dashboard": "false", "dashboard-host": "0.0.0.0",
                   "num-cpus": "1", "num-gpus": "0"}
    head = _group(["sh", "-c", "exec $KUBERAY_GEN_RAY_START_CMD --node-ip-address=$POD_IP"],
                  [], [pod_ip_env()], head_params,
                  ports=[{"name": "gcs-server", "containerPort": gcs}],
                  readinessProbe={"tcpSocket": {"port": "gcs-server"}, "periodSeconds": 5})
    worker = _worker()
    rcs = k8s_dynamic.resources.get(api_version="ray.io/v1", kind="RayCluster")
    rcs.create(namespace=ns, body={
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "tiny"},
        "spec": {"headGroupSpec": head, "workerGroupSpecs": [worker]}})
    core = client.CoreV1Api(k8s_client)

    def pods() -> dict[str, Any]:
        return {p.metadata.labels["ray.io/node-type"]: p
                for p in core.list_namespaced_pod(ns, label_selector="ray.io/cluster=tiny").items}

    found = wait_for(lambda: (p := pods()) and len(p) == 2 and all(
        is_ready(x) for x in p.values()) and p, "head and worker Ready", timeout=120)
    head_ip, worker_ip = found["head"].status.pod_ip, found["worker"].status.pod_ip
    spec_env = {e.name: e.value for e in found["worker"].spec.containers[0].env}
    assert f"tiny-head-svc.{ns}.svc.cluster.local:{gcs}" in spec_env[
        "KUBERAY_GEN_RAY_START_CMD"]  # the object keeps the name; the process got the IP
    nodes = wait_for(lambda: (n := _ray_nodes(f"{head_ip}:{gcs}")) and len(n) == 2 and n,
                     "two alive Ray nodes", timeout=120, interval=1.0)
    assert nodes == sorted([[head_ip, 0], [worker_ip, 1.0]])
    status = wait_for(lambda: (r := rcs.get(namespace=ns, name="tiny")).status and
                      r.status.readyWorkerReplicas == 1 and r.status, "RayCluster status")
    assert status.head.podIP == head_ip

    head_pids = _processes_of(found["head"].metadata.name)
    assert len(head_pids) > 3  # ray's own processes
    assert _processes_of(found["worker"].metadata.name)

    # The head container crashes: it restarts with a fresh /tmp (TMPDIR), so Ray starts
    # again although the worker's raylet still names the old head address.
    for pid in head_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    name = found["head"].metadata.name
    restarted = wait_for(lambda: (p := core.read_namespaced_pod(name, ns)).status
                         .container_statuses[0].restart_count >= 1 and is_ready(p) and p,
                         "head restarted and Ready", timeout=120)
    assert restarted.status.pod_ip == head_ip  # the pod keeps its address
    assert "already running" not in core.read_namespaced_pod_log(name, ns)
    assert [head_ip, 0] in wait_for(lambda: _ray_nodes(f"{head_ip}:{gcs}"), "new head",
                                    timeout=60, interval=1.0)
    rcs.delete(namespace=ns, name="tiny")
    wait_for(lambda: not pods(), "pods deleted", timeout=60)
    for pod in found.values():
        wait_for(lambda p=pod: not _processes_of(p.metadata.name),
                 f"processes of {pod.metadata.name} gone", timeout=60)
    assert not _port_open(head_ip, gcs)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_two_rayclusters_with_default_ports_each_get_their_own_gcs(
        k8s_lab: LabServer, k8s_client: Any, k8s_dynamic: Any, k8s_namespace: str) -> None:
    """Both heads want GCS port 6379 (and client port 10001); on one machine the lab gives
    each cluster its own, behind the head Service's port 6379."""
    _register_crd(k8s_lab, k8s_client)
    ns = k8s_namespace
    rcs = k8s_dynamic.resources.get(api_version="ray.io/v1", kind="RayCluster")
    params = {"include-dashboard": "false", "dashboard-host": "0.0.0.0", "num-cpus": "1",
              "num-gpus": "0"}
    names = ("one", "two")
    for name in names:
        head = _group(["sh", "-c", "exec $KUBERAY_GEN_RAY_START_CMD --node-ip-address=$POD_IP"],
                      [], [pod_ip_env()], params)
        rcs.create(namespace=ns, body={
            "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
            "spec": {"headGroupSpec": head, "workerGroupSpecs": [_worker()]}})
    core = client.CoreV1Api(k8s_client)
    gcs: dict[str, int] = {}

    def head_service(name: str):
        try:
            return core.read_namespaced_service(f"{name}-head-svc", ns)
        except client.ApiException as exc:  # the controller makes it after the RayCluster
            if exc.status == 404:
                return None
            raise

    for name in names:
        svc = wait_for(lambda n=name: head_service(n), f"{name}'s head Service", timeout=30)
        port = next(p for p in svc.spec.ports if p.port == 6379)
        gcs[name] = int(port.target_port)
        assert svc.metadata.annotations["gpu-lab.llmops.io/gcs-port"] == str(gcs[name])
    assert len(set(gcs.values())) == 2 and 6379 not in gcs.values()

    def pods(name: str) -> dict[str, Any]:
        return {p.metadata.labels["ray.io/node-type"]: p for p in core.list_namespaced_pod(
            ns, label_selector=f"ray.io/cluster={name}").items}

    for name in names:
        found = wait_for(lambda n=name: (p := pods(n)) and len(p) == 2 and all(
            is_ready(x) for x in p.values()) and p, f"{name} Ready", timeout=120)
        head_ip, worker_ip = found["head"].status.pod_ip, found["worker"].status.pod_ip
        env = {e.name: e.value for e in found["head"].spec.containers[0].env}
        assert env["RAY_PORT"] == str(gcs[name])
        assert f"--port={gcs[name]}" in env["KUBERAY_GEN_RAY_START_CMD"]
        head_pod = found["head"].metadata.name
        wait_for(lambda a=head_ip, p=gcs[name]: _port_open(a, p), f"{name}'s GCS listening",
                 timeout=180, interval=1.0,
                 context=lambda p=head_pod: core.read_namespaced_pod_log(p, ns)[-3000:])
        nodes = wait_for(lambda a=f"{head_ip}:{gcs[name]}": (n := _ray_nodes(a)) and len(n) == 2
                         and n, f"{name}: two alive Ray nodes", timeout=120, interval=1.0)
        assert nodes == sorted([[head_ip, 0], [worker_ip, 1.0]])  # its own nodes only
    for name in names:
        rcs.delete(namespace=ns, name=name)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, "pods deleted", timeout=60)
