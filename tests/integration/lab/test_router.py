"""The lab's router: Routes served over TLS from the lab CA to Ready process pods.

The backend is a small real aiohttp server in a process pod (echo, SSE stream, slow
answer); the test talks to the router's HTTPS address with the Route's Host header and
checks what arrives on both ends."""

from __future__ import annotations

import functools
import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from gpu_lab.apiserver.server import LabServer
from kubernetes import client

from .test_process_network import IMAGE, free_port, is_ready, pod_ip_env, pod_of
from .waiting import wait_for

pytestmark = pytest.mark.lab

_BACKEND = """
import asyncio, json, os, sys
from aiohttp import web
host, port, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def echo(request):
    body = await request.read()
    return web.json_response({"pod": os.environ["POD_IP"], "method": request.method,
                              "path": request.path_qs, "headers": dict(request.headers),
                              "body": body.decode()})
async def health(request):
    ok = os.path.exists(os.path.join(flags, "ready"))
    return web.Response(status=200 if ok else 503)
async def stream(request):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: first\\n\\n")
    release = os.path.join(flags, "release")
    while not os.path.exists(release):
        await asyncio.sleep(0.05)
    await response.write(b"data: last\\n\\n")
    await response.write_eof()
    return response
async def slow(request):
    await asyncio.sleep(float(request.query["s"]))
    return web.Response(text="late")
app = web.Application()
app.router.add_get("/health", health)
app.router.add_get("/stream", stream)
app.router.add_get("/slow", slow)
app.router.add_route("*", "/{tail:.*}", echo)
web.run_app(app, host=host, port=port, print=None)
"""


def _backend(name: str, port: int, flags: Path) -> dict[str, Any]:
    flags.mkdir(parents=True, exist_ok=True)
    return {"metadata": {"name": name, "labels": {"app": "echo"}}, "spec": {
        "terminationGracePeriodSeconds": 2, "containers": [{
            "name": "main", "image": IMAGE, "command": ["python", "-c", _BACKEND],
            "args": ["0.0.0.0", str(port), str(flags)], "env": [pod_ip_env()],
            "ports": [{"name": "web", "containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "web"},
                               "periodSeconds": 5, "failureThreshold": 1}}]}}


def _route(name: str, host: str, timeout: str | None = None,
           tls: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if timeout:
        meta["annotations"] = {"haproxy.router.openshift.io/timeout": timeout}
    spec: dict[str, Any] = {"host": host, "to": {"kind": "Service", "name": "echo"},
                            "port": {"targetPort": "api"}}
    spec["tls"] = tls if tls is not None else {"termination": "edge",
                                               "insecureEdgeTerminationPolicy": "Redirect"}
    return {"apiVersion": "route.openshift.io/v1", "kind": "Route", "metadata": meta,
            "spec": spec}


@pytest.fixture
def echo(k8s_lab: LabServer, k8s_client: Any, k8s_dynamic: Any, k8s_namespace: str,
         tmp_path: Path) -> dict[str, Any]:
    """Service "echo" (port 8443 named api -> container port "web") with two backend pods,
    and Route "echo" (edge) for echo-<ns>.<apps domain>."""
    core = client.CoreV1Api(k8s_client)
    ns = k8s_namespace
    core.create_namespaced_service(ns, {"metadata": {"name": "echo"}, "spec": {
        "selector": {"app": "echo"}, "ports": [{"name": "api", "port": 8443,
                                                "targetPort": "web"}]}})
    port = free_port()
    flags = {n: tmp_path / n for n in ("echo-0", "echo-1")}
    for name, directory in flags.items():
        core.create_namespaced_pod(ns, _backend(name, port, directory))
    routes = k8s_dynamic.resources.get(api_version="route.openshift.io/v1", kind="Route")
    host = f"echo-{ns}.{k8s_lab.settings.apps_domain}"
    routes.create(namespace=ns, body=_route("echo", host))
    return {"ns": ns, "host": host, "flags": flags, "routes": routes, "core": core,
            "port": port}


def _ready(echo: dict[str, Any], *names: str) -> None:
    for name in names:
        (echo["flags"][name] / "ready").write_text("ok")
    for name in names:
        wait_for(lambda n=name: is_ready(pod_of(echo["core"], echo["ns"], n)), f"{name} ready")


def _get(lab: LabServer, host: str, path: str = "/", **kwargs: Any) -> requests.Response:
    headers = {"Host": host, **kwargs.pop("headers", {})}
    return requests.request(kwargs.pop("method", "GET"), f"{lab.router_url}{path}",
                            headers=headers, verify=lab.router_ca,
                            timeout=kwargs.pop("timeout", 10), **kwargs)


def test_router_address_is_published(k8s_lab: LabServer) -> None:
    assert k8s_lab.router_url.startswith("https://127.0.0.1:")
    info = json.loads(k8s_lab.settings.router_file.read_text())
    assert info == {"url": k8s_lab.router_url, "ca": k8s_lab.router_ca,
                    "appsDomain": k8s_lab.settings.apps_domain}
    status = requests.get(f"{k8s_lab.url}/lab/status", verify=k8s_lab.router_ca, timeout=10,
                          headers={"Authorization": f"Bearer {k8s_lab.admin_token}"}).json()
    assert status["router"] == k8s_lab.router_url


def test_certificate_covers_loopback_and_the_apps_wildcard(k8s_lab: LabServer) -> None:
    port = int(k8s_lab.router_url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=k8s_lab.router_ca)
    for name in ("127.0.0.1", "localhost", f"any-app.{k8s_lab.settings.apps_domain}"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=name) as tls:
            assert tls.version()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="app.example.com")


def test_route_reaches_ready_pods_round_robin_with_headers_and_body(
        k8s_lab: LabServer, echo: dict[str, Any]) -> None:
    assert _get(k8s_lab, echo["host"]).status_code == 503  # pods not ready yet
    _ready(echo, "echo-0", "echo-1")
    ips = {pod_of(echo["core"], echo["ns"], n).status.pod_ip for n in ("echo-0", "echo-1")}
    seen = []
    for i in range(4):
        response = _get(k8s_lab, f"{echo['host']}:443", f"/v1/x?i={i}", method="POST",
                        data=b'{"prompt": "hi"}',
                        headers={"Authorization": "Bearer s3cret", "X-Forwarded-For": "10.9.9.9",
                                 "Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        got = response.json()
        seen.append(got["pod"])
        assert (got["method"], got["path"], got["body"]) == ("POST", f"/v1/x?i={i}",
                                                             '{"prompt": "hi"}')
        headers = got["headers"]
        assert headers["Authorization"] == "Bearer s3cret"
        assert headers["Host"] == f"{echo['host']}:443"
        assert headers["X-Forwarded-Proto"] == "https"
        assert headers["X-Forwarded-Host"] == f"{echo['host']}:443"
        assert headers["X-Forwarded-For"] == "10.9.9.9, 127.0.0.1"
    assert set(seen) == ips and seen[0] != seen[1] and seen[0] == seen[2]


def test_not_available_for_unknown_hosts_unready_pods_and_non_edge_routes(
        k8s_lab: LabServer, echo: dict[str, Any]) -> None:
    unknown = _get(k8s_lab, f"nothing.{k8s_lab.settings.apps_domain}")
    assert unknown.status_code == 503 and "Application is not available" in unknown.text
    unready = _get(k8s_lab, echo["host"])
    assert unready.status_code == 503 and "no ready pod" in unready.text
    _ready(echo, "echo-0")
    assert _get(k8s_lab, echo["host"]).status_code == 200
    (echo["flags"]["echo-0"] / "ready").unlink()
    wait_for(lambda: not is_ready(pod_of(echo["core"], echo["ns"], "echo-0")), "unready")
    assert _get(k8s_lab, echo["host"]).status_code == 503
    _ready(echo, "echo-0")
    passthrough = f"pt-{echo['ns']}.{k8s_lab.settings.apps_domain}"
    echo["routes"].create(namespace=echo["ns"], body=_route(
        "pt", passthrough, tls={"termination": "passthrough"}))
    wait_for(lambda: _admitted(echo, "pt"), "pt admitted")
    refused = _get(k8s_lab, passthrough)
    assert refused.status_code == 503 and "edge" in refused.text


def _admitted(echo: dict[str, Any], name: str) -> bool:
    route = echo["routes"].get(namespace=echo["ns"], name=name)
    return bool(route.status and route.status.ingress)


def test_streaming_arrives_as_it_is_sent(k8s_lab: LabServer, echo: dict[str, Any]) -> None:
    _ready(echo, "echo-0", "echo-1")
    with _get(k8s_lab, echo["host"], "/stream", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks)
        assert b"data: first" in first
        # the backend sends the last event only now: the first came through unbuffered
        for flags in echo["flags"].values():
            (flags / "release").write_text("go")
        rest = b"".join(chunks)
    assert b"data: last" in rest


def test_route_timeout_annotation(k8s_lab: LabServer, echo: dict[str, Any]) -> None:
    _ready(echo, "echo-0", "echo-1")
    apps = k8s_lab.settings.apps_domain
    short, long = f"short-{echo['ns']}.{apps}", f"long-{echo['ns']}.{apps}"
    echo["routes"].create(namespace=echo["ns"], body=_route("short", short, timeout="1s"))
    echo["routes"].create(namespace=echo["ns"], body=_route("long", long, timeout="1m"))
    for name in ("short", "long"):
        wait_for(lambda n=name: _admitted(echo, n), f"{name} admitted")
    began = time.monotonic()
    cut = _get(k8s_lab, short, "/slow?s=3")
    took = time.monotonic() - began
    assert cut.status_code == 504 and 0.9 <= took < 2.5
    assert _get(k8s_lab, short, "/slow?s=0.2").text == "late"
    assert _get(k8s_lab, long, "/slow?s=2").text == "late"


def test_kept_alive_connection_carries_many_requests_round_robin(
        k8s_lab: LabServer, echo: dict[str, Any]) -> None:
    """One client connection, several requests: each is framed, relayed and balanced on
    its own, including a chunked request body and a streamed (chunked) response."""
    _ready(echo, "echo-0", "echo-1")
    for flags in echo["flags"].values():
        (flags / "release").write_text("go")
    accepted = k8s_lab.router.accepted
    with requests.Session() as session:
        session.headers["Host"] = echo["host"]
        session.request = functools.partial(session.request,  # type: ignore[method-assign]
                                            verify=k8s_lab.router_ca, timeout=10)
        pods = []
        for i in range(4):
            got = session.post(f"{k8s_lab.router_url}/v1/x?i={i}",
                               data=b"a" * (i * 5000)).json()
            assert (got["path"], len(got["body"])) == (f"/v1/x?i={i}", i * 5000)
            pods.append(got["pod"])
        streamed = session.get(f"{k8s_lab.router_url}/stream")
        assert streamed.text == "data: first\n\ndata: last\n\n"
        chunked = session.post(f"{k8s_lab.router_url}/v1/chunked",
                               data=(part for part in (b"one,", b"two"))).json()
        assert chunked["body"] == "one,two"
        assert "chunked" in chunked["headers"].get("Transfer-Encoding", "")
        head = session.head(f"{k8s_lab.router_url}/v1/head")
        assert head.status_code == 200 and head.content == b""
        after = session.post(f"{k8s_lab.router_url}/v1/after", data=b"{}").json()
        assert after["path"] == "/v1/after"
    assert pods[0] != pods[1] and pods[0] == pods[2]
    # one TLS connection carried all of it: the router kept it open after each response
    assert k8s_lab.router.accepted - accepted == 1
