"""The lab's OpenShift router: an HTTPS listener that sends Route traffic to Ready pods.

It runs on the API server's loop (it reads the store directly; routes.py says how a
request finds its Route and backends). The listener is ``https://127.0.0.1:PORT`` (a
free port, kept in the settings like the API port) with a certificate from the lab CA
for 127.0.0.1, localhost and ``*.<apps domain>``; there is no DNS, so clients connect
to that address and send the Route's host in the ``Host`` header (or SNI).

Only edge-terminated Routes are served (TLS ends here, the pod gets plain HTTP): a
Route without TLS or with passthrough/reencrypt gets the 503 page, as does an unknown
host or a Route without a Ready pod. Backends are used round-robin; one refusing the
connection is skipped for the next. Request and response bodies stream through
unbuffered (SSE and chunked responses arrive as the pod sends them); hop-by-hop headers
are dropped; ``X-Forwarded-For/-Host/-Port/-Proto`` and ``Forwarded`` are added. The
Route's timeout annotation bounds each wait for the backend (504 before the response
started; the connection is cut after). ``$GPU_LAB_HOME/router.json`` holds
``{"url", "ca", "appsDomain"}`` while the router runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from .apiserver.tls import ensure_router_certificate
from .routes import TIMEOUT_ANNOTATION, RouteTable, parse_timeout

if TYPE_CHECKING:
    from .apiserver.server import LabServer

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
    "Trailer", "Trailers", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"))
_NOT_AVAILABLE = """<!DOCTYPE html>
<html><head><title>Application is not available</title></head>
<body><h1>Application is not available</h1>
<p>Nothing serves this address right now: {why}.</p>
<p>Check that a Route exists for this host name, and that the pods of its Service are
running and ready.</p></body></html>
"""


def _page(status: int, why: str) -> web.Response:
    return web.Response(status=status, text=_NOT_AVAILABLE.format(why=why),
                        content_type="text/html",
                        headers={"Cache-Control": "private, max-age=0, no-cache, no-store"})


class Router:
    def __init__(self, server: LabServer) -> None:
        self.server = server
        self.settings = server.settings
        self.table = RouteTable(server.store)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._turns: dict[str, itertools.count[int]] = {}

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.settings.k8s_dir / "ca.crt")

    @property
    def info_file(self) -> Any:
        return self.settings.router_file

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        crt, key = ensure_router_certificate(self.settings.k8s_dir, self.settings.apps_domain)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(crt, key)
        context.set_alpn_protocols(["http/1.1"])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.settings.router_port))
        except OSError:
            log.warning("router port %s is busy; taking a free one", self.settings.router_port)
            sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.settings.router_port = self.port
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"))
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        self.info_file.write_text(json.dumps({"url": self.url, "ca": self.ca,
                                              "appsDomain": self.settings.apps_domain}))
        log.info("router listening on %s", self.url)

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            if json.loads(self.info_file.read_text()).get("url") == self.url:
                self.info_file.unlink()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- requests ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0] if not (request.host or "").endswith(
            "]") else request.host
        route = self.table.route_for(host, request.path)
        if route is None:
            return _page(503, f"no route for the host {host!r}")
        tls = (route.get("spec") or {}).get("tls") or {}
        termination = str(tls.get("termination") or "").lower()
        if termination != "edge":
            return _page(503, f"the route {route['metadata']['name']} is not edge-terminated "
                         f"(termination {termination or 'none'}); the lab serves edge only")
        backends = self.table.backends(route)
        if not backends:
            return _page(503, f"the route {route['metadata']['name']} has no ready pod")
        timeout = parse_timeout((route["metadata"].get("annotations") or {}).get(
            TIMEOUT_ANNOTATION))
        uid = route["metadata"]["uid"]
        turn = next(self._turns.setdefault(uid, itertools.count()))
        body = await self._body(request)
        for attempt in range(len(backends)):
            ip, port = backends[(turn + attempt) % len(backends)]
            try:
                return await self._forward(request, body, ip, port, timeout)
            except aiohttp.ClientConnectorError as exc:
                log.debug("router: %s:%s refused (%s)", ip, port, exc)
                if not isinstance(body, bytes):
                    break  # a streamed body cannot be sent twice
        return _page(503, f"no pod of the route {route['metadata']['name']} accepted "
                     "the connection")

    @staticmethod
    async def _body(request: web.Request) -> bytes | Any:
        if not request.body_exists:
            return b""
        length = request.content_length
        if length is not None and length <= 1024 * 1024:
            return await request.read()
        return request.content  # streamed (large or chunked)

    def _headers(self, request: web.Request, streamed: bool) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        for name in request.headers.getall("Connection", []):
            for token in name.split(","):
                headers.pop(token.strip(), None)
        if streamed and request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        client = request.remote or ""
        earlier = request.headers.get("X-Forwarded-For")
        host = request.host or ""
        headers.update({
            "Host": host,
            "X-Forwarded-For": f"{earlier}, {client}" if earlier else client,
            "X-Forwarded-Host": host, "X-Forwarded-Port": str(self.port),
            "X-Forwarded-Proto": "https",
            "Forwarded": f'for={client};host={host};proto=https'})
        return headers

    async def _forward(self, request: web.Request, body: Any, ip: str, port: int,
                       timeout: float) -> web.StreamResponse:
        assert self._session is not None
        url = f"http://{ip}:{port}{request.raw_path}"
        limits = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT,
                                       sock_read=timeout)
        headers = self._headers(request, not isinstance(body, bytes))
        try:
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None,
                allow_redirects=False, timeout=limits, compress=None)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return web.Response(status=504, text="504 Gateway Time-out: the server did not "
                                f"answer within {timeout:g} s\n")
        except aiohttp.ClientConnectorError:
            raise
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"502 Bad Gateway: {exc}\n")
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP or name.lower() == "content-length":
                    response.headers.add(name, value)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("router: %s cut while streaming: %r", url, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write_eof()
            return response
