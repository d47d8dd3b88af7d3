"""The launcher's API key middleware, driven as ASGI (a recording inner app)."""

import asyncio
import json

import pytest
from gpu_stack_runtime.launcher.auth import RequireApiKey, route_path

KEY, METRICS_KEY = "the-api-key", "the-metrics-key"


class _Inner:
    def __init__(self):
        self.seen = []

    async def __call__(self, scope, receive, send):
        self.seen.append((scope["type"], scope.get("method"), scope.get("path")))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


def _call(app, path, method="GET", token=None, kind="http", root_path="", raw_auth=None):
    headers = [(b"host", b"x")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if raw_auth is not None:
        headers.append((b"Authorization", raw_auth))
    scope = {"type": kind, "path": path, "root_path": root_path, "headers": headers}
    if kind == "http":
        scope["method"] = method
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _status(sent):
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.fixture
def guarded():
    inner = _Inner()
    return RequireApiKey(inner, environ={"VLLM_API_KEY": KEY,
                                         "GPU_STACK_METRICS_KEY": METRICS_KEY}), inner


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"),
    ("GET", "/metrics/"), ("GET", "/v1/models"), ("GET", "/ping"), ("GET", "/openapi.json"),
    ("OPTIONS", "/v1/completions"), ("GET", "/health/"), ("POST", "/health"),
    ("GET", "//health"), ("GET", "/a-route-a-new-vllm-adds"), ("GET", "/")])
def test_without_the_key_every_path_but_health_is_refused(guarded, method, path):
    app, inner = guarded
    sent = _call(app, path, method)
    assert _status(sent) == 401
    assert json.loads(sent[1]["body"])["error"]["code"] == 401
    assert inner.seen == []  # nothing reached vLLM's app
    assert _status(_call(app, path, method, token="wrong")) == 401
    assert _status(_call(app, path, method, token=KEY)) == 200
    assert len(inner.seen) == 1


def test_health_is_open_and_the_root_path_is_stripped(guarded):
    app, inner = guarded
    assert _status(_call(app, "/health")) == 200
    assert _status(_call(app, "/llm/health", root_path="/llm")) == 200
    assert _status(_call(app, "/llm/tokenize", "POST", root_path="/llm")) == 401
    assert route_path({"path": "/llmx/health", "root_path": "/llm"}) == "/llmx/health"
    assert [s[2] for s in inner.seen] == ["/health", "/llm/health"]


def test_the_metrics_key_reads_metrics_and_nothing_else(guarded):
    app, _inner = guarded
    assert _status(_call(app, "/metrics", token=METRICS_KEY)) == 200
    assert _status(_call(app, "/metrics", "HEAD", token=METRICS_KEY)) == 200
    for method, path in (("POST", "/metrics"), ("GET", "/v1/models"),
                         ("POST", "/v1/completions"), ("GET", "/metrics/x")):
        assert _status(_call(app, path, method, token=METRICS_KEY)) == 401, path


@pytest.mark.parametrize("raw", [b"Basic dGhlLWFwaS1rZXk=", b"the-api-key", b"Bearer",
                                 b"Bearer  ", b"Token the-api-key"])
def test_only_a_bearer_token_counts(guarded, raw):
    app, _inner = guarded
    assert _status(_call(app, "/tokenize", "POST", raw_auth=raw)) == 401


def test_a_websocket_without_the_key_is_closed_before_the_app(guarded):
    app, inner = guarded
    assert _call(app, "/v1/realtime", kind="websocket") == [
        {"type": "websocket.close", "code": 1008}]
    assert inner.seen == []
    _call(app, "/v1/realtime", kind="websocket", token=KEY)
    assert inner.seen == [("websocket", None, "/v1/realtime")]


def test_lifespan_passes_and_no_key_fails_closed():
    inner = _Inner()
    app = RequireApiKey(inner, api_key=KEY, environ={})
    asyncio.run(app({"type": "lifespan"}, None, None))
    assert inner.seen == [("lifespan", None, None)]
    with pytest.raises(RuntimeError, match="needs an API key"):
        RequireApiKey(inner, environ={"VLLM_API_KEY": "  "})
