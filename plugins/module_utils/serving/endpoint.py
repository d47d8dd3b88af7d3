# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The OpenAI-compatible vLLM endpoint: connection options, smoke checks, the load runner.

Connection options are defined once (``endpoint_argument_spec()``, doc fragment
``llmops.gpu_stack.llm_endpoint``) and turned into an ``Endpoint`` by
``Endpoint.from_params``, which refuses bad input before any request. Requests go through
the maintained ``openai`` client on top of its own HTTP library (``httpx2``), whose client
carries TLS (``ca_path`` / ``validate_certs``) and, with ``host_header``, the Host header
and the TLS server name: the client connects to ``base_url`` (a router address) while the
router and its certificate see the Route's host name. ``/health`` is not an OpenAI route
and goes through the same HTTP client.

``wait_ready`` retries only connection failures and HTTP 503 (a Route without ready
endpoints) until ``wait_timeout``, with ``common/wait.py``. ``smoke_test`` then runs the
checks in order and stops at the first failure with an error naming the check, the
request and the HTTP status with a body excerpt; its ``auth`` check (``endpoint_auth.py``)
sends every route the server documents, and a fixed list, without the key. ``run_load``
sends the load test's requests with ``AsyncOpenAI`` and returns per-request records for
``serving/loadtest.py``.
The API key is only ever sent as the Authorization header; error texts are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConnectionFailedError,
    GpuStackError,
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
    TransientError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint_auth import (
    check_every_path,
)

try:
    import httpx2
    import openai

    HAS_OPENAI = True
    OPENAI_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised only without the openai package
    HAS_OPENAI = False
    OPENAI_IMPORT_ERROR = _exc  # the modules report it with missing_required_lib

BODY_EXCERPT = 300
CHECKS = ("health", "models", "completion", "chat", "stream", "auth")


def endpoint_argument_spec() -> dict:
    """Connection options shared by llm_endpoint_check and llm_load_test."""
    return {
        "base_url": {"type": "str", "required": True},
        "api_key": {"type": "str", "no_log": True},
        "model": {"type": "str", "required": True},
        "ca_path": {"type": "path"},
        "validate_certs": {"type": "bool", "default": True},
        "host_header": {"type": "str"},
        "timeout": {"type": "int", "default": 60},
        "wait_timeout": {"type": "int", "default": 120},
    }


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # scheme://host[:port][/prefix], without /v1
    model: str
    api_key: str | None = None
    ca_path: str | None = None
    validate_certs: bool = True
    host_header: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_params(cls, params: dict) -> Endpoint:
        """Check the connection options; raises ``InvalidInputError`` before any request."""
        if not HAS_OPENAI:
            raise InvalidInputError("the openai Python package (and its httpx2) is required "
                                    "on the host the module runs on")
        url = (params.get("base_url") or "").strip().rstrip("/")
        if url.endswith("/v1"):
            url = url[:-3]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"base_url {params.get('base_url')!r} must be an http(s) "
                                    "URL such as https://llm-llm.apps.example.com")
        if parts.query or parts.fragment or parts.username:
            raise InvalidInputError("base_url must not carry a query, fragment or user info")
        if not (params.get("model") or "").strip():
            raise InvalidInputError("model (the served model name) must not be empty")
        ca_path = params.get("ca_path")
        if ca_path and not os.path.isfile(ca_path):
            raise InvalidInputError(f"ca_path {ca_path} is not a file")
        host = (params.get("host_header") or "").strip() or None
        if host is not None and any(c in host for c in "/ \t\r\n@"):
            raise InvalidInputError(f"host_header {host!r} must be a host name (optionally "
                                    "with :port)")
        timeout = params.get("timeout", 60)
        if timeout is None or timeout <= 0:
            raise InvalidInputError("timeout must be a positive number of seconds")
        if params.get("wait_timeout") is not None and params["wait_timeout"] < 0:
            raise InvalidInputError("wait_timeout must not be negative")
        return cls(base_url=url, model=params["model"].strip(),
                   api_key=params.get("api_key") or None, ca_path=ca_path or None,
                   validate_certs=params.get("validate_certs", True), host_header=host,
                   timeout=float(timeout))

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def scrub(self, text: str) -> str:
        """``text`` without the API key (a server might echo a header)."""
        return text.replace(self.api_key, "********") if self.api_key else text

    # --- clients ------------------------------------------------------------------------
    def _verify(self):
        if not self.validate_certs:
            return False
        if self.ca_path:
            return ssl.create_default_context(cafile=self.ca_path)
        return True

    def _client_kwargs(self, asynchronous: bool, connections: int | None = None) -> dict:
        kwargs = {"verify": self._verify(), "timeout": self.timeout}
        if connections:
            kwargs["limits"] = httpx2.Limits(max_connections=connections,
                                             max_keepalive_connections=connections)
        if self.host_header:
            kwargs["headers"] = {"Host": self.host_header}
            server_name = urlsplit(f"//{self.host_header}").hostname

            def _sni(request):
                request.extensions["sni_hostname"] = server_name

            async def _async_sni(request):
                _sni(request)

            kwargs["event_hooks"] = {"request": [_async_sni if asynchronous else _sni]}
        return kwargs

    def http_client(self):
        return httpx2.Client(**self._client_kwargs(False))

    def openai_client(self, http, api_key: str | None = None):
        key = api_key or self.api_key or "no-key"
        return openai.OpenAI(base_url=self.api_url, api_key=key, http_client=http,
                             max_retries=0, timeout=self.timeout)

    def async_openai_client(self, connections: int):
        http = httpx2.AsyncClient(**self._client_kwargs(True, connections))
        return openai.AsyncOpenAI(base_url=self.api_url, api_key=self.api_key or "no-key",
                                  http_client=http, max_retries=0, timeout=self.timeout)


# --- errors -----------------------------------------------------------------------------
def _is_tls(exc: BaseException) -> bool:
    seen = exc
    for _depth in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _excerpt(ep: Endpoint, text: str) -> str:
    text = ep.scrub(" ".join((text or "").split()))
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "..."


def _status_error(ep: Endpoint, check: str, request: str, status: int, body: str, **extra):
    excerpt = _excerpt(ep, body)
    msg = f"endpoint check '{check}' failed: {request} returned HTTP {status}: {excerpt}"
    details = {"check": check, "request": request, "status": status, "body": excerpt, **extra}
    if status in (401, 403):
        return AuthError(msg, **details)
    if status == 404:
        return NotFoundError(msg, **details)
    if status == 503:
        return TransientError(msg, **details)
    return OperationFailedError(msg, reason=excerpt, **details)


def translate(ep: Endpoint, check: str, request: str, exc: BaseException) -> GpuStackError:
    """An openai / httpx2 exception as one of our typed errors, naming check and request."""
    if isinstance(exc, openai.APIStatusError):
        try:
            body = exc.response.text
        except Exception:  # a streamed response whose body was not read
            body = json.dumps(exc.body) if exc.body is not None else exc.message
        return _status_error(ep, check, request, exc.status_code, body)
    text = _excerpt(ep, f"{type(exc).__name__}: {exc}")
    if _is_tls(exc):
        return ConnectionFailedError(
            f"endpoint check '{check}' failed: {request}: TLS verification failed ({text}); "
            "give ca_path (the CA of the Route's certificate) or host_header",
            check=check, request=request, status=None, tls=True)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return ConnectionFailedError(
            f"endpoint check '{check}' failed: {request}: cannot connect to {ep.base_url} "
            f"({text})", check=check, request=request, status=None, tls=False)
    return OperationFailedError(f"endpoint check '{check}' failed: {request}: {text}",
                                reason=text, check=check, request=request, status=None)


_CLIENT_ERRORS = ()
if HAS_OPENAI:
    _CLIENT_ERRORS = (openai.OpenAIError, httpx2.HTTPError)


# --- readiness --------------------------------------------------------------------------
def _health(ep: Endpoint, http) -> None:
    try:
        response = http.get(f"{ep.base_url}/health")
    except _CLIENT_ERRORS as exc:
        raise translate(ep, "health", "GET /health", exc) from exc
    if response.status_code != 200:
        raise _status_error(ep, "health", "GET /health", response.status_code, response.text)


def wait_ready(ep: Endpoint, http, wait_timeout: float, sleep=time.sleep,
               clock=time.monotonic) -> float:
    """GET /health until 200; only connection failures and HTTP 503 are retried.

    Returns the seconds waited; raises ``ConnectionFailedError`` naming the last failure
    when ``wait_timeout`` runs out, and any other failure at once.
    """
    start = clock()

    def _check() -> WaitStatus:
        try:
            _health(ep, http)
        except (TransientError, ConnectionFailedError) as exc:
            if exc.details.get("tls"):
                raise
            return WaitStatus(done=False, progress=f"last attempt: {exc.msg}")
        return WaitStatus(done=True)

    try:
        wait_for(_check, timeout=wait_timeout, what=f"{ep.base_url}/health", interval=1.0,
                 backoff=1.5, max_interval=10.0, tolerate=(), clock=clock, sleep=sleep)
    except WaitTimeout as exc:
        raise ConnectionFailedError(
            f"endpoint check 'health' failed: {exc.msg}", check="health",
            request="GET /health", status=None, elapsed=exc.elapsed) from exc
    return round(clock() - start, 3)


# --- smoke checks -----------------------------------------------------------------------
class _Checks:
    """Runs named checks in order, recording each; the first failure ends the run."""

    def __init__(self, ep: Endpoint):
        self.ep = ep
        self.results: list[dict] = []

    def run(self, name: str, request: str, func):
        start = time.perf_counter()
        try:
            detail = func()
        except GpuStackError as exc:
            error = exc
        except _CLIENT_ERRORS as exc:
            error = translate(self.ep, name, request, exc)
            error.__cause__ = exc
        else:
            self.results.append({"name": name, "ok": True, "request": request,
                                 "elapsed_ms": _ms(start), **detail})
            return detail
        self.results.append({"name": name, "ok": False, "request": request,
                             "elapsed_ms": _ms(start), "status": error.details.get("status"),
                             "error": error.msg})
        error.details.setdefault("check", name)
        error.details["checks"] = self.results
        raise error


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _models(ep: Endpoint, client) -> dict:
    served = [model.id for model in client.models.list().data]
    if ep.model not in served:
        raise NotFoundError(
            f"endpoint check 'models' failed: GET /v1/models does not list model "
            f"{ep.model!r} (served: {', '.join(served) or 'none'})",
            check="models", request="GET /v1/models", status=200, served=served)
    return {"status": 200, "served": served}


def _completion(ep: Endpoint, client, prompt: str, max_tokens: int) -> dict:
    out = client.completions.create(model=ep.model, prompt=prompt, max_tokens=max_tokens,
                                    temperature=0)
    text = out.choices[0].text if out.choices else ""
    tokens = out.usage.completion_tokens if out.usage else 0
    if not tokens or not text:
        raise OperationFailedError(
            f"endpoint check 'completion' failed: POST /v1/completions returned "
            f"{tokens or 0} completion tokens and text {text!r}", reason="no generated text",
            check="completion", request="POST /v1/completions", status=200)
    return {"status": 200, "completion_tokens": tokens, "text": text,
            "finish_reason": out.choices[0].finish_reason}


def _chat(ep: Endpoint, client, prompt: str, max_tokens: int) -> dict:
    out = client.chat.completions.create(
        model=ep.model, messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens, temperature=0)
    message = out.choices[0].message if out.choices else None
    tokens = out.usage.completion_tokens if out.usage else 0
    if message is None or message.role != "assistant" or not message.content or not tokens:
        raise OperationFailedError(
            "endpoint check 'chat' failed: POST /v1/chat/completions returned no assistant "
            f"message ({tokens or 0} completion tokens)", reason="no message", check="chat",
            request="POST /v1/chat/completions", status=200)
    return {"status": 200, "completion_tokens": tokens, "text": message.content}


def _stream(ep: Endpoint, client, prompt: str, max_tokens: int) -> dict:
    chunks, text, done, tokens = 0, [], False, None
    with client.completions.with_streaming_response.create(
            model=ep.model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if event.get("choices"):
                chunks += 1
                text.append(event["choices"][0].get("text") or "")
            if event.get("usage"):
                tokens = event["usage"].get("completion_tokens")
    wanted = 2 if max_tokens > 1 else 1
    if chunks < wanted or not done:
        raise OperationFailedError(
            f"endpoint check 'stream' failed: POST /v1/completions (stream) gave {chunks} "
            f"chunks{'' if done else ' and no [DONE] end'}", reason="bad stream",
            check="stream", request="POST /v1/completions (stream)", status=200)
    return {"status": 200, "chunks": chunks, "done": done, "completion_tokens": tokens,
            "text": "".join(text)}


def smoke_test(ep: Endpoint, prompt: str, max_tokens: int, wait_timeout: float,
               sleep=time.sleep) -> dict:
    """Run the checks of ``CHECKS`` in order; returns the results and the sample texts."""
    if max_tokens < 1:
        raise InvalidInputError("max_tokens must be at least 1")
    if not prompt:
        raise InvalidInputError("prompt must not be empty")
    checks = _Checks(ep)
    with ep.http_client() as http:
        client = ep.openai_client(http)
        checks.run("health", "GET /health",
                   lambda: {"status": 200, "waited_s": wait_ready(ep, http, wait_timeout, sleep)})
        models = checks.run("models", "GET /v1/models", lambda: _models(ep, client))
        completion = checks.run("completion", "POST /v1/completions",
                                lambda: _completion(ep, client, prompt, max_tokens))
        chat = checks.run("chat", "POST /v1/chat/completions",
                          lambda: _chat(ep, client, prompt, max_tokens))
        checks.run("stream", "POST /v1/completions (stream)",
                   lambda: _stream(ep, client, prompt, max_tokens))
        if ep.api_key:
            checks.run("auth", "every path but GET /health without the key",
                       lambda: check_every_path(ep.base_url, http, ep.api_key))
        else:
            checks.results.append({"name": "auth", "ok": True, "skipped": True,
                                   "request": None, "detail": "no api_key given"})
    return {"checks": checks.results, "served_models": models["served"],
            "sample_completion": completion["text"], "chat_reply": chat["text"]}


# --- load -------------------------------------------------------------------------------
async def _one(ep: Endpoint, client, index: int, t0: float, body: dict, stream: bool) -> dict:
    start = time.perf_counter()
    record = {"index": index, "ok": False, "status": None, "start_s": round(start - t0, 4),
              "latency_ms": None, "ttft_ms": None, "completion_tokens": 0,
              "tokens_source": None, "error": None}
    chat = "messages" in body
    create = client.chat.completions.create if chat else client.completions.create
    try:
        if stream:
            chunks, usage = 0, None
            response = await create(**body, stream=True, stream_options={"include_usage": True})
            async for chunk in response:
                if chunk.choices and (not chat or chunk.choices[0].delta.content):
                    if record["ttft_ms"] is None:
                        record["ttft_ms"] = _ms(start)
                    chunks += 1
                if chunk.usage:
                    usage = chunk.usage.completion_tokens
            tokens, source = (usage, "usage") if usage is not None else (chunks, "chunks")
        else:
            out = await create(**body)
            tokens, source = (out.usage.completion_tokens, "usage") if out.usage else (0, None)
        record.update(ok=True, status=200, completion_tokens=int(tokens or 0),
                      tokens_source=source)
    except openai.APIStatusError as exc:
        record.update(status=exc.status_code, error=_excerpt(ep, exc.message))
    except (openai.OpenAIError, httpx2.HTTPError) as exc:
        record["error"] = _excerpt(ep, f"{type(exc).__name__}: {exc}")
    record["latency_ms"] = _ms(start)
    return record


async def _load(ep: Endpoint, requests: int, concurrency: int, body: dict, stream: bool,
                rate: float | None):
    client = ep.async_openai_client(concurrency)
    todo = iter(range(requests))
    results: list[dict] = []
    t0 = time.perf_counter()

    async def _worker():
        for index in todo:
            if rate:  # request i is due at i / rate; it waits longer only for a free slot
                await asyncio.sleep(t0 + index / rate - time.perf_counter())
            results.append(await _one(ep, client, index, t0, body, stream))

    try:
        await asyncio.gather(*(_worker() for _n in range(min(concurrency, requests))))
    finally:
        await client.close()
    return results, time.perf_counter() - t0


LOAD_APIS = ("completions", "chat")


def run_load(ep: Endpoint, *, requests: int, concurrency: int, prompt: str, max_tokens: int,
             stream: bool = True, ignore_eos: bool = False, rate: float | None = None,
             api: str = "completions"):
    """Send ``requests`` completions, ``concurrency`` at a time; per-request records.

    ``api``: ``completions`` (``/v1/completions`` with ``prompt``) or ``chat``
    (``/v1/chat/completions``, ``prompt`` as the user's message; a streamed reply's first
    token is its first chunk with content, not the chunk that only names the role).

    With ``rate`` (requests per second) the load is open: request ``i`` starts at
    ``i / rate`` seconds (or later, when ``concurrency`` requests are still in flight)
    instead of as soon as a slot frees; without it, each slot sends its next request at
    once (closed loop, as fast as the endpoint answers).

    Returns ``(records, started, finished, duration_s)`` (UTC datetimes, monotonic
    duration). Failed requests are records with ``ok: false``, never exceptions.
    """
    if api not in LOAD_APIS:
        raise ValueError(f"api must be one of {', '.join(LOAD_APIS)}, not {api!r}")
    body = {"model": ep.model, "max_tokens": max_tokens, "temperature": 0,
            **({"messages": [{"role": "user", "content": prompt}]} if api == "chat"
               else {"prompt": prompt})}
    if ignore_eos:
        body["extra_body"] = {"ignore_eos": True}  # vLLM: generate exactly max_tokens
    started = datetime.now(UTC)
    records, duration = asyncio.run(_load(ep, requests, concurrency, body, stream, rate))
    return records, started, datetime.now(UTC), duration
