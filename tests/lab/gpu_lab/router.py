"""The lab's OpenShift router: an HTTPS listener that sends Route traffic to Ready pods.

It runs in its own thread with its own event loop (uvloop when installed: its TLS is
compiled), so relaying tokens neither waits behind the API server's work nor costs more
CPU than it must; each request's Route and backends are looked up on the API server's
loop, which owns the store (routes.py says how a request finds them). The listener is
``https://127.0.0.1:PORT`` (a free port, kept in the settings like the API port) with a
certificate from the lab CA for 127.0.0.1, localhost and ``*.<apps domain>``; there is
no DNS, so clients connect to that address and send the Route's host in the ``Host``
header.

Only edge-terminated Routes are served (TLS ends here, the pod gets plain HTTP): a
Route without TLS or with passthrough/reencrypt gets the 503 page, as does an unknown
host or a Route without a Ready pod. Each request picks its backend round-robin (one
refusing the connection is skipped for the next); a kept-alive client connection keeps
its backend connection while the pick stays the same.

It relays like HAProxy in HTTP mode, at the cost of a byte relay: the request head is
parsed and rewritten (hop-by-hop headers dropped, ``X-Forwarded-For/-Host/-Port/-Proto``
and ``Forwarded`` added), then bodies pass as the bytes arrive, never re-encoded, with
http1.py counting where each message ends (so SSE and chunked responses arrive as the
pod sends them, and the CPU cost per streamed token is one write). The Route's timeout
annotation bounds each wait for the backend: 504 before the response started, the
connection is cut after. ``$GPU_LAB_HOME/router.json`` holds ``{"url", "ca",
"appsDomain"}`` while the router runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import ssl
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from . import http1
from .apiserver.tls import ensure_router_certificate
from .routes import TIMEOUT_ANNOTATION, RouteTable, parse_timeout

if TYPE_CHECKING:
    from .apiserver.server import LabServer

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 300.0  # a kept-alive client connection with no request in flight
_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "proxy-connection", "te", "trailer", "upgrade", "forwarded",
                  "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto"))
_NOT_AVAILABLE = """<!DOCTYPE html>
<html><head><title>Application is not available</title></head>
<body><h1>Application is not available</h1>
<p>Nothing serves this address right now: {why}.</p>
<p>Check that a Route exists for this host name, and that the pods of its Service are
running and ready.</p></body></html>
"""


def _page(status: int, reason: str, why: str) -> bytes:
    return http1.response(status, reason, _NOT_AVAILABLE.format(why=why).encode(),
                          "text/html")


class Router:
    def __init__(self, server: LabServer) -> None:
        self.server = server
        self.settings = server.settings
        self.table = RouteTable(server.store)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._turns: dict[str, itertools.count[int]] = {}
        self._conns: set[_Client] = set()
        self.accepted = 0  # client connections so far (tests count kept-alive reuse)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.settings.k8s_dir / "ca.crt")

    @property
    def info_file(self) -> Any:
        return self.settings.router_file

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
        self._api_loop = asyncio.get_running_loop()
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(sock, context, ready),
                                        name="lab-router", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)
        self.info_file.write_text(json.dumps({"url": self.url, "ca": self.ca,
                                              "appsDomain": self.settings.apps_domain}))
        log.info("router listening on %s", self.url)

    def _run(self, sock: socket.socket, context: ssl.SSLContext, ready: Future[None]) -> None:
        try:
            import uvloop  # optional: the serving group brings it (vLLM's server uses it)
            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(loop.create_server(
                lambda: _Client(self), sock=sock, ssl=context, backlog=256))
        except BaseException as exc:  # handed to start()
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def stop(self) -> None:
        with contextlib.suppress(OSError):
            if json.loads(self.info_file.read_text()).get("url") == self.url:
                self.info_file.unlink()
        if self._loop is None or self._thread is None:
            return
        done = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        await asyncio.wrap_future(done)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns):
                conn.close()
            await asyncio.sleep(0)  # let the transports run their close callbacks

    async def lookup(self, host: str, path: str) -> tuple[list[tuple[str, int]], float] | bytes:
        """pick() on the API server's loop (the store is that loop's), from the router's."""
        async def on_api_loop() -> tuple[list[tuple[str, int]], float] | bytes:
            return self.pick(host, path)

        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(on_api_loop(), self._api_loop))

    def pick(self, host: str, path: str) -> tuple[list[tuple[str, int]], float] | bytes:
        """The backends to try in order and the Route's timeout, or the 503 page."""
        route = self.table.route_for(host, path)
        if route is None:
            return _page(503, "Service Unavailable", f"no route for the host {host!r}")
        name = route["metadata"]["name"]
        termination = str(((route.get("spec") or {}).get("tls") or {}).get(
            "termination") or "").lower()
        if termination != "edge":
            return _page(503, "Service Unavailable", f"the route {name} is not "
                         f"edge-terminated (termination {termination or 'none'}); "
                         "the lab serves edge only")
        backends = self.table.backends(route)
        if not backends:
            return _page(503, "Service Unavailable", f"the route {name} has no ready pod")
        turn = next(self._turns.setdefault(route["metadata"]["uid"], itertools.count()))
        start = turn % len(backends)
        timeout = parse_timeout((route["metadata"].get("annotations") or {}).get(
            TIMEOUT_ANNOTATION))
        return backends[start:] + backends[:start], timeout


class _Upstream(asyncio.Protocol):
    """The router's connection to one pod, owned by one client connection."""

    def __init__(self, client: _Client, address: tuple[str, int]) -> None:
        self.client = client
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.upstream_lost(self)

    def pause_writing(self) -> None:
        self.client.pause_reading()

    def resume_writing(self) -> None:
        self.client.resume_reading()


class _Client(asyncio.Protocol):
    """One TLS client connection: requests in turn, each relayed to a backend."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.state = "head"  # head -> connecting -> body -> response -> head
        self.request: http1.Body | None = None
        self.method = ""
        self.upstream: _Upstream | None = None
        self.reply: http1.Body | None = None
        self.reply_head = bytearray()
        self.started = False  # the current response's first byte arrived
        self.timeout = IDLE_TIMEOUT
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False

    # --- client side ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.router._conns.add(self)
        self.router.accepted += 1
        self._arm(IDLE_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = "closed"
        self.router._conns.discard(self)
        self._disarm()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.state == "head":
            self._next_request()
        elif self.state == "body":
            self._send_body()

    def pause_writing(self) -> None:  # the client reads slower than the pod sends
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, page: bytes) -> None:
        assert self.transport is not None
        self.transport.write(page)
        self.state = "closing"
        self.close()

    def _next_request(self) -> None:
        try:
            parsed = http1.split_head(self.buffer)
        except http1.BadMessage as exc:
            self._fail(http1.response(400, "Bad Request", f"{exc}\n".encode(), "text/plain"))
            return
        if parsed is None:
            return
        head, size = parsed
        del self.buffer[:size]
        try:
            self.method, target, _version = head.start.split(" ", 2)
            self.request = http1.Body.of_request(head)
        except (ValueError, http1.BadMessage) as exc:
            self._fail(http1.response(400, "Bad Request", f"{exc}\n".encode(), "text/plain"))
            return
        host = head.get("Host") or ""
        host = host if host.endswith("]") else host.rsplit(":", 1)[0]
        self.state = "connecting"
        self.pause_reading()
        self.loop.create_task(self._connect(host, target.split("?", 1)[0], self._rewrite(head)))

    def _rewrite(self, head: http1.Head) -> bytes:
        assert self.transport is not None
        named = head.tokens("Connection")
        client = (self.transport.get_extra_info("peername") or ("",))[0]
        host = head.get("Host") or ""
        earlier = head.get("X-Forwarded-For")
        lines = [head.start]
        lines += [f"{k}: {v}" for k, v in head.headers
                  if k.lower() not in _HOP and k.lower() not in named
                  and k.lower() != "x-forwarded-for"]
        lines += [f"X-Forwarded-For: {earlier + ', ' if earlier else ''}{client}",
                  f"X-Forwarded-Host: {host}", f"X-Forwarded-Port: {self.router.port}",
                  "X-Forwarded-Proto: https", f"Forwarded: for={client};host={host};proto=https",
                  "Connection: keep-alive"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connect(self, host: str, path: str, head: bytes) -> None:
        picked = await self.router.lookup(host, path)
        if self.state != "connecting":
            return
        if isinstance(picked, bytes):
            self._fail(picked)
            return
        backends, self.timeout = picked
        current = self.upstream
        if current is not None and (current.closed or current.address != backends[0]):
            if current.transport is not None:
                current.transport.close()
            current = self.upstream = None
        for address in ([] if current else backends):
            try:
                pair = await asyncio.wait_for(self.loop.create_connection(
                    lambda a=address: _Upstream(self, a), *address), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                log.debug("router: %s:%s refused (%s)", *address, exc)
                continue
            current = self.upstream = pair[1]
            break
        if self.state != "connecting":  # the client went away meanwhile
            if current is not None and current.transport is not None:
                current.transport.close()
            return
        if current is None or current.transport is None:
            self._fail(_page(503, "Service Unavailable", "no pod of the route accepted "
                             "the connection"))
            return
        current.transport.write(head)
        self.reply, self.reply_head, self.started = None, bytearray(), False
        self._arm(self.timeout)
        self.state = "body"
        self.resume_reading()
        self._send_body()

    def _send_body(self) -> None:
        assert self.request is not None and self.upstream is not None
        end = self.request.feed(self.buffer)
        if end and self.upstream.transport is not None:
            self.upstream.transport.write(bytes(self.buffer[:end]))
            del self.buffer[:end]
        if self.request.done:
            self.state = "response"
            self.pause_reading()  # a pipelined next request waits for this response

    # --- backend side -----------------------------------------------------------------
    def from_upstream(self, upstream: _Upstream, data: bytes) -> None:
        if upstream is not self.upstream or self.transport is None:
            return
        if self.state not in ("body", "response"):
            upstream.transport.close()  # bytes nobody asked for
            return
        self.started = True
        self.last = self.loop.time()
        self.transport.write(data)
        try:
            self._track(data)
        except http1.BadMessage as exc:
            log.info("router: %s:%s sent a bad response: %s", *upstream.address, exc)
            self.close()

    def _track(self, data: bytes) -> None:
        start = 0
        if self.reply is None:
            self.reply_head += data
            parsed = http1.split_head(self.reply_head)
            if parsed is None:
                return
            head, start = parsed
            data, self.reply_head = bytes(self.reply_head), bytearray()
            if http1.status_of(head) < 200:  # 1xx: the real response head follows
                self._track(data[start:])
                return
            self.reply = http1.Body.of_response(head, self.method)
        self.reply.feed(data, start)
        if self.reply.done:
            self._response_done()

    def _response_done(self) -> None:
        self.state = "head"
        self._arm(IDLE_TIMEOUT)
        self.resume_reading()
        if self.buffer:
            self._next_request()

    def upstream_lost(self, upstream: _Upstream) -> None:
        if upstream is not self.upstream:
            return
        self.upstream = None
        if self.state in ("body", "response"):
            if self.reply is not None and self.reply.left is None and not self.reply.chunked:
                self.close()  # a response that ends with its connection
            elif not self.started:
                self._fail(http1.response(502, "Bad Gateway", b"502 Bad Gateway: the pod "
                                          b"closed the connection\n", "text/plain"))
            else:
                self.close()  # cut mid-response: the client sees it end early

    # --- timeouts ---------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.last = self.loop.time()
        self.timer = self.loop.call_later(seconds, self._expired, seconds)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, seconds: float) -> None:
        self.timer = None
        left = self.last + seconds - self.loop.time()
        if left > 0:  # something arrived meanwhile: wait the rest
            self.timer = self.loop.call_later(left, self._expired, seconds)
            return
        if self.state in ("body", "response") and not self.started:
            self._fail(http1.response(504, "Gateway Time-out", b"504 Gateway Time-out: the "
                                      b"server did not answer within "
                                      + f"{seconds:g} s\n".encode(), "text/plain"))
        else:
            self.close()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
