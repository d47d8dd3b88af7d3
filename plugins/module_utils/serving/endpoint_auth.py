# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The smoke test's ``auth`` check: no path but the health check answers without the key.

The paths come from the server itself: ``GET /openapi.json`` with the key lists every
documented route of the installed vLLM, so a route a newer vLLM adds is probed too. The
fixed list ``FIXED_PATHS`` (routes vLLM serves outside its OpenAPI document, such as
``/metrics``, and the well-known ones when the document cannot be read) is always added.
Each (method, path) but ``GET /health`` is sent twice, without an ``Authorization`` header
and with a wrong key; every answer must be HTTP 401. A POST carries a body that is not
valid JSON, so even an unguarded route rejects it before doing anything. Every failure is
collected and reported at once.
"""

from __future__ import annotations

import re
import secrets

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
)

try:
    import httpx2

    _HTTP_ERRORS: tuple = (httpx2.HTTPError,)
except ImportError:  # pragma: no cover - endpoint.py refuses to run without it
    _HTTP_ERRORS = ()

OPEN = (("GET", "/health"),)
FIXED_PATHS = (
    ("GET", "/metrics"), ("GET", "/v1/models"), ("GET", "/version"), ("GET", "/load"),
    ("GET", "/ping"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
    ("GET", "/docs/oauth2-redirect"),
    ("POST", "/invocations"), ("POST", "/tokenize"), ("POST", "/detokenize"),
    ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("POST", "/v1/responses"),
    ("POST", "/v1/embeddings"), ("POST", "/pooling"), ("POST", "/score"),
    ("POST", "/classify"), ("POST", "/rerank"), ("POST", "/v1/messages"),
    ("POST", "/inference/v1/generate"), ("POST", "/inference/v1/abort_requests"),
    ("POST", "/abort_requests"),
    # vLLM 0.32 keeps these out of its OpenAPI document
    ("POST", "/v1/chat/completions/render"), ("POST", "/v1/completions/render"),
    ("POST", "/v1/messages/render"), ("POST", "/v1/responses/render"),
    ("POST", "/v1/chat/completions/derender"), ("POST", "/v1/completions/derender"),
)
_METHODS = ("get", "post", "put", "patch", "delete")
_PARAM = re.compile(r"\{[^}/]*\}")
_NOT_JSON = b"{"


def documented_paths(spec: dict) -> list[tuple[str, str]]:
    """(METHOD, path) of each operation of an OpenAPI document, ``{param}`` as ``x``."""
    out = []
    for path, item in (spec.get("paths") or {}).items():
        for method in _METHODS:
            if isinstance(item, dict) and method in item:
                out.append((method.upper(), _PARAM.sub("x", path)))
    return out


def probe_set(base_url: str, http, api_key: str) -> tuple[list[tuple[str, str]], str]:
    """The (METHOD, path) pairs to probe and where they came from."""
    source, found = "fixed list", []
    try:
        response = http.get(f"{base_url}/openapi.json",
                            headers={"Authorization": f"Bearer {api_key}"})
        if response.status_code == 200:
            found, source = documented_paths(response.json()), "openapi.json and fixed list"
    except (ValueError, *_HTTP_ERRORS):  # not JSON, or not answered: the fixed list
        pass
    pairs = sorted(set(found) | set(FIXED_PATHS))
    return [p for p in pairs if p not in OPEN], source


def _send(base_url: str, http, method: str, path: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = None
    if method != "GET":
        headers["Content-Type"] = "application/json"
        body = _NOT_JSON
    return http.request(method, f"{base_url}{path}", headers=headers, content=body).status_code


def check_every_path(base_url: str, http, api_key: str) -> dict:
    """Raise ``AuthError`` naming every (method, path) that answered without the key."""
    pairs, source = probe_set(base_url, http, api_key)
    wrong = "wrong-" + secrets.token_hex(8)
    failures = []
    for method, path in pairs:
        for label, key in (("without a key", None), ("with a wrong key", wrong)):
            status = _send(base_url, http, method, path, key)
            if status != 401:
                failures.append(f"{method} {path} {label}: HTTP {status}")
    if failures:
        raise AuthError(
            f"endpoint check 'auth' failed: {len(failures)} of {2 * len(pairs)} requests "
            f"were not refused with HTTP 401 (paths from the {source}): "
            + "; ".join(failures), check="auth", request="every path without the key",
            status=None, open_paths=failures, paths_from=source)
    return {"status": 401, "probed": [f"{m} {p}" for m, p in pairs], "paths_from": source}
