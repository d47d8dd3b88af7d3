"""A real Prometheus (Debian's ``prometheus``) for tests, and what a ServiceMonitor means.

``scrape_job(core, custom, namespace, name, work)`` reads a ServiceMonitor back from an
API server and turns its first endpoint into a Prometheus scrape job the way the
Prometheus Operator does: the Services its selector and namespace selector match, the
Service port its ``port`` names, the pods the Service selects and the container port the
Service port's ``targetPort`` names, its ``scheme`` and ``path``, and its ``authorization``
with the credential read from the Secret it references into a file (never into the
configuration). ``Prometheus`` runs the binary on a free loopback port with its own data
directory, answers instant queries through the HTTP API, and is stopped by PID.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from integration.lab.waiting import wait_for

BINARY = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _selector(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _container_port(pod: Any, target: Any) -> int:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    return next(p.container_port for c in pod.spec.containers for p in c.ports or []
                if p.name == target)


def scrape_job(core: Any, custom: Any, namespace: str, name: str, work: Path) -> dict:
    """The scrape job of ServiceMonitor ``namespace/name``'s first endpoint."""
    monitor = custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", namespace,
                                                  "servicemonitors", name)
    spec = monitor["spec"]
    endpoint = spec["endpoints"][0]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [namespace]
    targets = []
    for ns in namespaces:
        services = core.list_namespaced_service(
            ns, label_selector=_selector(spec["selector"]["matchLabels"])).items
        for service in services:
            port = next(p for p in service.spec.ports if p.name == endpoint["port"])
            pods = core.list_namespaced_pod(ns, label_selector=_selector(
                service.spec.selector)).items
            for pod in pods:
                targets.append({"targets": [f"{pod.status.pod_ip}:"
                                            f"{_container_port(pod, port.target_port)}"],
                                "labels": {"namespace": ns, "service": service.metadata.name,
                                           "pod": pod.metadata.name}})
    job = {"job_name": f"serviceMonitor/{namespace}/{name}/0",
           "scheme": endpoint.get("scheme", "http"),
           "metrics_path": endpoint.get("path", "/metrics"),
           "static_configs": targets}
    auth = endpoint.get("authorization")
    if auth:
        ref = auth["credentials"]
        secret = core.read_namespaced_secret(ref["name"], namespace)
        credential = work / f"{namespace}-{ref['name']}-{ref['key']}"
        credential.write_bytes(base64.b64decode(secret.data[ref["key"]]))
        credential.chmod(0o600)
        job["authorization"] = {"type": auth.get("type", "Bearer"),
                                "credentials_file": str(credential)}
    return job


class Prometheus:
    """``prometheus`` scraping ``jobs`` every second, in ``work``."""

    def __init__(self, jobs: list[dict], work: Path) -> None:
        assert BINARY, "prometheus is not installed (tests/bootstrap.sh installs Debian's)"
        self.port = _free_port()
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": jobs}))
        self.log = (work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [BINARY, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._ready, "Prometheus ready", timeout=30, interval=0.2,
                 context=lambda: (work / "prometheus.log").read_text()[-2000:])

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
