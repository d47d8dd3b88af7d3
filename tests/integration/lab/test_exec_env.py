"""pods/exec in a process pod runs with the container's environment, as a real exec
does (values, fieldRefs such as the pod IP, the lab's PATH first)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream

from .waiting import wait_for

pytestmark = pytest.mark.lab
IMAGE = "registry.example.com/llmops/gpu-stack-runtime:0.1.0"


def test_exec_sees_the_container_environment(k8s_client: Any, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_pod(k8s_namespace, {
        "metadata": {"name": "env"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python"],
            "args": ["-c", "import time; time.sleep(600)"],
            "env": [{"name": "GREETING", "value": "from-the-pod-spec"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {
                        "fieldPath": "status.podIP"}}}]}]}})
    pod = wait_for(lambda: (p := core.read_namespaced_pod("env", k8s_namespace)).status.phase
                   == "Running" and p, timeout=60, what="the pod running")
    out = stream(core.connect_get_namespaced_pod_exec, "env", k8s_namespace,
                 command=["sh", "-c", 'echo "$GREETING $POD_IP"; command -v python'],
                 stderr=True, stdin=False, stdout=True, tty=False)
    first, where = out.strip().splitlines()[:2]
    assert first == f"from-the-pod-spec {pod.status.pod_ip}"
    assert pod.status.pod_ip.startswith("127.0.0.")
    assert where.endswith("/python")
    core.delete_namespaced_pod("env", k8s_namespace, grace_period_seconds=0)
