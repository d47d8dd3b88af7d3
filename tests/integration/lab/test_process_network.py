"""Process pods on the lab's pod network: loopback pod IPs, 0.0.0.0 and Service names
rewritten, the ContainerCreating hold, real readiness/startup probes. Every pod runs a
small real server; the test reaches it directly on the pod IP it reads from the API."""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from gpu_lab.apiserver.server import LabServer
from kubernetes import client

from .waiting import wait_for

pytestmark = pytest.mark.lab
IMAGE = "registry.example.com/llmops/gpu-stack-runtime:0.1.0"

# A /health endpoint answering 200 while FLAG exists, 503 otherwise; "/" says who it is.
_FLAG_SERVER = """
import http.server, os, sys, time
host, port, flag, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
time.sleep(delay)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/health" or os.path.exists(flag)
        body = (os.environ.get("POD_IP", "?") + "\\n").encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((host, port), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pod_ip_env() -> dict[str, Any]:
    return {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def server_pod(name: str, port: int, flag: Path | None = None, delay: float = 0.0,
               labels: dict[str, str] | None = None, **container: Any) -> dict[str, Any]:
    """A process pod serving HTTP on 0.0.0.0:port (rewritten to its pod IP)."""
    args = ["-c", _FLAG_SERVER, "0.0.0.0", str(port), str(flag or "/nonexistent"), str(delay)]
    return {"metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "main", "image": IMAGE, "command": ["python"], "args": args,
                "env": [pod_ip_env()], "ports": [{"name": "http", "containerPort": port}],
                **container}]}}


def get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def pod_of(core: client.CoreV1Api, ns: str, name: str) -> Any:
    return core.read_namespaced_pod(name, ns)


def is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def running(core: client.CoreV1Api, ns: str, name: str) -> Any:
    pod = pod_of(core, ns, name)
    return pod if pod.status.phase == "Running" and pod.status.pod_ip else None


def logs(core: client.CoreV1Api, ns: str, name: str) -> str:
    return core.read_namespaced_pod_log(name, ns, container="main")


def test_pods_get_their_own_loopback_ip_seen_through_the_downward_api(
        k8s_lab: LabServer, k8s_client: Any, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    port = free_port()  # the same port in both pods: each binds only its own address
    for name in ("a", "b"):
        core.create_namespaced_pod(k8s_namespace, server_pod(name, port))
    pods = [wait_for(lambda n=n: running(core, k8s_namespace, n), f"pod {n} running")
            for n in ("a", "b")]
    ips = [p.status.pod_ip for p in pods]
    assert len(set(ips)) == 2
    for pod, ip in zip(pods, ips, strict=True):
        address = ipaddress.IPv4Address(ip)
        assert address.is_loopback and ip != "127.0.0.1"
        assert [i.ip for i in pod.status.pod_ips] == [ip]
        # the server bound 0.0.0.0 -> its pod IP, and sees its pod IP in the environment
        status, body = wait_for(lambda ip=ip: (r := _try_get(f"http://{ip}:{port}/")) and r,
                                f"server on {ip}:{port}")
        assert (status, body.strip()) == (200, ip)
    kubelet = k8s_lab.controllers.get("kubelet")
    uid = pods[0].metadata.uid
    assert k8s_lab.call(kubelet.pod_ips.in_use)[uid] == ips[0]
    core.delete_namespaced_pod("a", k8s_namespace)
    wait_for(lambda: uid not in k8s_lab.call(kubelet.pod_ips.in_use), "address of a freed")
    wait_for(lambda: _try_get(f"http://{ips[0]}:{port}/") is None, "a's server stopped")


def _try_get(url: str) -> tuple[int, str] | None:
    try:
        return get(url, timeout=1.0)
    except OSError:
        return None


def test_service_names_become_an_endpoint_pod_ip_and_hold_the_pod_until_then(
        k8s_client: Any, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    ns, port = k8s_namespace, free_port()
    core.create_namespaced_service(ns, {"metadata": {"name": "backend"}, "spec": {
        "selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": "http"}]}})
    fqdn, short = f"backend.{ns}.svc.cluster.local", f"backend.{ns}.svc"
    fetch = ("import os, sys, time, urllib.request\n"
             "print('TARGET=' + os.environ['TARGET'], 'ARG=' + sys.argv[1], flush=True)\n"
             "print('GOT', urllib.request.urlopen(sys.argv[1]).status, flush=True)\n"
             "time.sleep(600)\n")
    core.create_namespaced_pod(ns, {"metadata": {"name": "client"}, "spec": {"containers": [{
        "name": "main", "image": IMAGE, "command": ["python", "-c", fetch],
        "args": [f"http://{short}:80/"],
        "env": [{"name": "TARGET", "value": f"--address={fqdn}:80 --x=1"}]}],
        "terminationGracePeriodSeconds": 1}})

    def held() -> Any:
        events = core.list_namespaced_event(
            ns, field_selector="involvedObject.name=client,reason=ServiceNotResolvable").items
        return events if events else None

    events = wait_for(held, "the hold event")
    assert fqdn in events[0].message or short in events[0].message
    pod = pod_of(core, ns, "client")
    assert pod.status.phase == "Pending" and not pod.status.pod_ip
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"

    core.create_namespaced_pod(ns, server_pod("backend", port, readinessProbe={
        "tcpSocket": {"port": "http"}, "periodSeconds": 1}))
    backend = wait_for(lambda: running(core, ns, "backend"), "backend running")
    wait_for(lambda: running(core, ns, "client"), "client started once backend runs")
    out = wait_for(lambda: "GOT" in (text := logs(core, ns, "client")) and text,
                   "client fetched through the rewritten name")
    ip = backend.status.pod_ip
    assert f"TARGET=--address={ip}:{port} --x=1" in out  # port 80 -> targetPort "http"
    assert f"ARG=http://{ip}:{port}/" in out and "GOT 200" in out
    wait_for(lambda: is_ready(pod_of(core, ns, "backend")), "tcpSocket readiness")


def test_readiness_follows_a_real_http_probe(k8s_client: Any, k8s_namespace: str,
                                             tmp_path: Path) -> None:
    core = client.CoreV1Api(k8s_client)
    ns, port, flag = k8s_namespace, free_port(), tmp_path / "healthy"
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5,
             "failureThreshold": 2}
    core.create_namespaced_pod(ns, server_pod("web", port, flag, delay=1.0,
                                              readinessProbe=probe))
    pod = wait_for(lambda: running(core, ns, "web"), "web running")
    ip = pod.status.pod_ip

    def unhealthy(text: str) -> Any:
        events = core.list_namespaced_event(
            ns, field_selector="involvedObject.name=web,reason=Unhealthy").items
        return [e.message for e in events if text in e.message] or None

    # not listening yet (1 s), then answering 503: never Ready
    refused = wait_for(lambda: unhealthy("connection refused"), "refused probe event")
    assert f"http://{ip}:{port}/health" in refused[0]
    wait_for(lambda: unhealthy("statuscode: 503"), "503 probe event")
    assert not is_ready(pod_of(core, ns, "web"))
    assert get(f"http://{ip}:{port}/health")[0] == 503
    flag.write_text("ok")
    wait_for(lambda: is_ready(pod_of(core, ns, "web")), "Ready once /health answers 200")
    status = pod_of(core, ns, "web").status.container_statuses[0]
    assert status.ready and status.started
    flag.unlink()
    wait_for(lambda: not is_ready(pod_of(core, ns, "web")), "not Ready when it fails again")
    assert pod_of(core, ns, "web").status.phase == "Running"


def test_startup_probe_that_gives_up_restarts_the_container(
        k8s_client: Any, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    ns, port, wrong = k8s_namespace, free_port(), free_port()
    core.create_namespaced_pod(ns, server_pod("slow", port, startupProbe={
        "tcpSocket": {"port": wrong}, "periodSeconds": 5, "failureThreshold": 3}))

    def restarted() -> Any:
        statuses = pod_of(core, ns, "slow").status.container_statuses or []
        return statuses[0] if statuses and statuses[0].restart_count >= 1 else None

    status = wait_for(restarted, "a restart after the startup probe gave up")
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code != 0
    reasons = {e.reason: e.message for e in core.list_namespaced_event(
        ns, field_selector="involvedObject.name=slow").items}
    assert "failed startup probe" in reasons["Killing"]
    assert "Startup probe failed" in reasons["Unhealthy"]
    pod = pod_of(core, ns, "slow")
    assert not is_ready(pod)


def test_process_pods_never_reach_each_other_through_0_0_0_0(
        k8s_client: Any, k8s_namespace: str) -> None:
    """A server asked to bind 0.0.0.0 answers on its pod IP only (not on 127.0.0.1)."""
    core = client.CoreV1Api(k8s_client)
    port = free_port()
    core.create_namespaced_pod(k8s_namespace, server_pod("only", port))
    pod = wait_for(lambda: running(core, k8s_namespace, "only"), "pod running")
    wait_for(lambda: _try_get(f"http://{pod.status.pod_ip}:{port}/"), "served on the pod IP")
    assert _try_get(f"http://127.0.0.1:{port}/") is None


def test_each_container_start_gets_a_fresh_private_tmpdir(k8s_client: Any,
                                                          k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    script = ("import os, sys, time\n"
              "tmp = os.environ['TMPDIR']\n"
              "print('TMP=' + tmp, sorted(os.listdir(tmp)), flush=True)\n"
              "open(os.path.join(tmp, 'left-over'), 'w').close()\n"
              "time.sleep(float(sys.argv[1]))\n")
    core.create_namespaced_pod(k8s_namespace, {"metadata": {"name": "tmp"}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python", "-c", script],
            "args": ["1"]}]}})

    def runs() -> list[str]:
        try:
            text = logs(core, k8s_namespace, "tmp")
        except client.ApiException:  # not started yet
            return []
        return [line for line in text.splitlines() if line.startswith("TMP=")]

    first, second = wait_for(lambda: (r := runs()) and len(r) >= 2 and r[:2],
                             "two runs of the container (it exits and restarts)")
    assert first.endswith(" []") and second.endswith(" []")  # empty each time
    paths = [Path(line.split()[0][4:]) for line in (first, second)]
    assert paths[0] != paths[1] and not paths[0].exists()  # removed with its container
    core.delete_namespaced_pod("tmp", k8s_namespace)
    wait_for(lambda: not any(p.exists() for p in paths), "temp dirs removed")
