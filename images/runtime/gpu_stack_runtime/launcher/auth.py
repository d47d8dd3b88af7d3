"""The API key on every path of vLLM's server but the health check.

vLLM's own ``--api-key`` guards only some path prefixes (``/v1``, ...): ``/invocations``,
``/tokenize``, ``/metrics`` and whatever a later vLLM adds answer without it. The
launcher therefore hands vLLM this ASGI middleware (``--middleware``, by import path;
vLLM adds it last, outside its own middleware and every route):

- ``GET``/``HEAD /health`` is open (the kubelet's probes, a Route's health check);
- every other request, whatever its path, method (``OPTIONS`` too) or protocol
  (HTTP or WebSocket), needs ``Authorization: Bearer <API key>``, else HTTP 401;
- ``GET``/``HEAD /metrics`` also accepts the metrics key, Prometheus' own credential:
  it reads the metrics and opens nothing else, so the scraper never holds a key that
  can generate.

The keys come from the environment the launcher gives vLLM (``VLLM_API_KEY``,
``GPU_STACK_METRICS_KEY``), never from argv. Keys are compared as SHA-256 digests with
``hmac.compare_digest``. Standard library only (a plain ASGI class, no Starlette).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping

API_KEY_ENV = "VLLM_API_KEY"
METRICS_KEY_ENV = "GPU_STACK_METRICS_KEY"
OPEN_PATHS = frozenset({"/health"})
METRICS_PATHS = frozenset({"/metrics"})
READ_METHODS = frozenset({"GET", "HEAD"})
MIDDLEWARE = "gpu_stack_runtime.launcher.auth.RequireApiKey"  # for vLLM's --middleware

_BODY = json.dumps({"error": {"message": "a valid API key is required "
                              "(Authorization: Bearer <key>)", "type": "Unauthorized",
                              "code": 401}}).encode()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def route_path(scope: Mapping) -> str:
    """The path the app routes on: ``path`` without the ``root_path`` prefix (as
    Starlette's routing strips it)."""
    path, root = scope.get("path") or "", scope.get("root_path") or ""
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):]
    return path


def _bearer(scope: Mapping) -> str | None:
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            scheme, _sep, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class RequireApiKey:
    """ASGI middleware: 401 for any request without the key, ``/health`` excepted."""

    def __init__(self, app, api_key: str | None = None, metrics_key: str | None = None,
                 environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        api_key = api_key or environ.get(API_KEY_ENV) or ""
        metrics_key = metrics_key or environ.get(METRICS_KEY_ENV) or ""
        if not api_key.strip():
            # Fail closed: a server asked to require a key must never start open.
            raise RuntimeError(f"{MIDDLEWARE} needs an API key ({API_KEY_ENV})")
        self.app = app
        self._api = _digest(api_key.strip())
        self._metrics = _digest(metrics_key.strip()) if metrics_key.strip() else None

    def allows(self, scope: Mapping) -> bool:
        """Whether this request (an ASGI http/websocket scope) may reach the app."""
        path = route_path(scope)
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        if path in OPEN_PATHS and method in READ_METHODS:
            return True
        token = _bearer(scope)
        if token is None:
            return False
        given = _digest(token)
        if hmac.compare_digest(given, self._api):
            return True
        return (self._metrics is not None and path in METRICS_PATHS
                and method in READ_METHODS and hmac.compare_digest(given, self._metrics))

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BODY)).encode()),
                (b"www-authenticate", b'Bearer realm="llm"')]})
            await send({"type": "http.response.body", "body": _BODY})
        else:  # a WebSocket handshake: refused before it is accepted (HTTP 403)
            await send({"type": "websocket.close", "code": 1008})
