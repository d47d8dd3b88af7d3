"""The session's vLLM behind the lab's own router: a Route (edge TLS, the lab CA) to a
Service whose pod relays to vLLM.

The pod is a process pod of the lab running a byte relay to the vLLM of ``served_model``
(which runs outside the lab). It records the head of each request that reaches it
(method, path, Host and X-Forwarded-Host as the router sent them, the monotonic time it
arrived) and answers the next N requests with the router's 503 while ``refuse`` says so
(a Route whose endpoints are not ready yet), so a test reads back what went through the
router, independently of the module under test.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from integration.lab.waiting import wait_for

NAMESPACE = "edge"
IMAGE = "registry.example.com/llmops/gpu-stack-runtime:0.1.0"

_RELAY = r"""
import asyncio, json, os, sys, time
listen, port, upstream, log, refuse = sys.argv[1], int(sys.argv[2]), sys.argv[3], *sys.argv[4:]
up_host, up_port = upstream.rsplit(":", 1)
METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
BODY = b"Application is not available"
UNREADY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
           b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))

def head_of(chunk):
    lines = chunk.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    method, path = lines[0].split(" ")[:2]
    return {"method": method, "path": path, "host": headers.get("host"),
            "forwarded_host": headers.get("x-forwarded-host"), "at": time.monotonic()}

def refused():
    try:
        left = int(open(refuse).read() or 0)
    except (OSError, ValueError):
        return False
    if left > 0:
        open(refuse, "w").write(str(left - 1))
    return left > 0

async def pump(reader, writer, inspect):
    try:
        while data := await reader.read(65536):
            if inspect and data.startswith(METHODS):
                entry = dict(head_of(data), refused=refused())
                with open(log, "a") as f:
                    f.write(json.dumps(entry) + "\n")
                if entry["refused"]:
                    return "refused"
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not inspect:
            writer.close()

async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(up_host, int(up_port))
    except OSError:
        writer.close()
        return
    back = asyncio.ensure_future(pump(up_reader, writer, False))
    if await pump(reader, up_writer, True) == "refused":
        back.cancel()
        writer.write(UNREADY)
        await writer.drain()
        writer.close()
    up_writer.close()

async def main():
    server = await asyncio.start_server(handle, listen, port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RoutedEndpoint:
    url: str  # the router's https://127.0.0.1:PORT
    ca: str  # the lab CA
    host: str  # the Route's host: send it as the Host header
    log: Path
    refuse_file: Path

    def refuse(self, count: int) -> None:
        """Answer the next ``count`` requests with 503, as a Route without ready pods."""
        self.refuse_file.write_text(str(count))

    def arrivals(self) -> list[dict[str, Any]]:
        """The requests that came through the router to the pod, oldest first."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def clear(self) -> None:
        self.log.write_text("")


def route_to(server: Any, core: Any, upstream: str, work: Path) -> RoutedEndpoint:
    """Route ``llm`` in namespace ``edge`` of the lab ``server`` to ``upstream``
    (host:port) through a relay pod; waits until the pod is Ready and the Route admitted."""
    from kubernetes import client

    port = _free_port()
    log, refuse = work / "arrivals.jsonl", work / "refuse"
    refuse.write_text("0")
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    core.create_namespaced_service(NAMESPACE, {"metadata": {"name": "llm"}, "spec": {
        "selector": {"app": "llm-relay"},
        "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})
    core.create_namespaced_pod(NAMESPACE, {
        "metadata": {"name": "llm-relay", "labels": {"app": "llm-relay"}},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "relay", "image": IMAGE, "command": ["python", "-c", _RELAY],
            "args": ["0.0.0.0", str(port), upstream, str(log), str(refuse)],
            "ports": [{"name": "http", "containerPort": port}]}]}})
    host = f"llm-{NAMESPACE}.{server.settings.apps_domain}"
    routes = client.CustomObjectsApi(core.api_client)
    routes.create_namespaced_custom_object("route.openshift.io", "v1", NAMESPACE, "routes", {
        "apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": {"name": "llm"},
        "spec": {"host": host, "to": {"kind": "Service", "name": "llm"},
                 "port": {"targetPort": "http"}, "tls": {"termination": "edge"}}})

    def ready() -> bool:
        pod = core.read_namespaced_pod("llm-relay", NAMESPACE)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)

    wait_for(ready, "the relay pod Ready", timeout=60)
    wait_for(lambda: routes.get_namespaced_custom_object(
        "route.openshift.io", "v1", NAMESPACE, "routes", "llm")["status"]["ingress"][0]
        ["conditions"][0]["status"] == "True", "Route llm admitted")
    return RoutedEndpoint(server.router_url, server.router_ca, host, log, refuse)
