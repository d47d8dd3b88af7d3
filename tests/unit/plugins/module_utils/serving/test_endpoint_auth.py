"""The smoke test's auth check against an in-memory server (httpx2's MockTransport)."""

import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import AuthError
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint_auth import (
    FIXED_PATHS,
    check_every_path,
    documented_paths,
)

httpx2 = pytest.importorskip("httpx2")

KEY = "the-key"
BASE = "https://llm.example.test"
SPEC = {"paths": {"/health": {"get": {}}, "/v1/models": {"get": {}},
                  "/v1/responses/{response_id}/cancel": {"post": {}},
                  "/brand-new": {"put": {}, "parameters": []}}}


def _server(open_paths=(), openapi=True):
    """A server that wants the key everywhere but GET /health and ``open_paths``;
    records (method, path, authorization, body) of each request."""
    seen = []

    def handler(request):
        path, auth = request.url.path, request.headers.get("authorization")
        seen.append((request.method, path, auth, request.content))
        if (request.method, path) == ("GET", "/health") or path in open_paths:
            return httpx2.Response(200, text="ok")
        if auth != f"Bearer {KEY}":
            return httpx2.Response(401, json={"error": "Unauthorized"})
        if path == "/openapi.json" and openapi:
            return httpx2.Response(200, json=SPEC)
        return httpx2.Response(404)

    return httpx2.Client(transport=httpx2.MockTransport(handler)), seen


def test_documented_paths_fill_parameters_and_skip_non_operations():
    assert sorted(documented_paths(SPEC)) == [
        ("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/responses/x/cancel"),
        ("PUT", "/brand-new")]


def test_every_documented_and_fixed_path_is_sent_without_and_with_a_wrong_key():
    http, seen = _server()
    result = check_every_path(BASE, http, KEY)
    probed = {tuple(p.split(" ", 1)) for p in result["probed"]}
    assert probed == ({("POST", "/v1/responses/x/cancel"), ("PUT", "/brand-new"),
                       ("GET", "/v1/models")} | set(FIXED_PATHS))
    assert ("GET", "/health") not in probed and result["paths_from"].startswith("openapi")
    probes = seen[1:]  # after GET /openapi.json with the key
    assert seen[0][:3] == ("GET", "/openapi.json", f"Bearer {KEY}")
    assert len(probes) == 2 * len(probed)
    assert {(m, p) for m, p, _a, _b in probes} == probed
    assert all(a is None or (a.startswith("Bearer wrong-") and KEY not in a)
               for _m, _p, a, _b in probes)
    assert all(b == b"{" for m, _p, _a, b in probes if m != "GET")  # never a valid request


def test_open_paths_are_all_reported_at_once():
    http, _seen = _server(open_paths=("/invocations", "/metrics", "/brand-new"))
    with pytest.raises(AuthError) as caught:
        check_every_path(BASE, http, KEY)
    error = caught.value
    assert "endpoint check 'auth' failed: 6 of" in error.msg
    assert error.details["open_paths"] == [
        "GET /metrics without a key: HTTP 200", "GET /metrics with a wrong key: HTTP 200",
        "POST /invocations without a key: HTTP 200",
        "POST /invocations with a wrong key: HTTP 200",
        "PUT /brand-new without a key: HTTP 200", "PUT /brand-new with a wrong key: HTTP 200"]
    assert KEY not in json.dumps(error.details)


def test_without_an_openapi_document_the_fixed_list_is_probed():
    http, seen = _server(openapi=False)
    result = check_every_path(BASE, http, KEY)
    assert result["paths_from"] == "fixed list"
    assert {("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"),
            ("POST", "/detokenize")} <= {(m, p) for m, p, _a, _b in seen}
