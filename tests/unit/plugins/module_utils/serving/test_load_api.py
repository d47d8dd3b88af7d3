"""run_load streams either API: what it sends, and where a chat's first token is."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.endpoint import (
    HAS_OPENAI,
    Endpoint,
    run_load,
)

# the load runner sends through the openai package, which the Python 3.12 unit venv lacks
pytestmark = pytest.mark.skipif(not HAS_OPENAI, reason="needs the openai package")

ROLE_ONLY_DELAY_S = 0.15  # the stub's chat stream: the role at once, content this later


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list] = []

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        chat = self.path == "/v1/chat/completions"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

        def send(obj):
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        kind = "chat.completion.chunk" if chat else "text_completion"
        if chat:
            send({"id": "c", "object": kind, "created": 1, "model": body["model"],
                  "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            time.sleep(ROLE_ONLY_DELAY_S)
        for i in range(3):
            choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else \
                {"index": 0, "text": f" t{i}"}
            send({"id": "c", "object": kind, "created": 1, "model": body["model"],
                  "choices": [choice]})
        send({"id": "c", "object": kind, "created": 1, "model": body["model"], "choices": [],
              "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def stub():
    _Stub.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Endpoint(base_url=f"http://127.0.0.1:{server.server_address[1]}", model="m",
                   api_key="k", timeout=10)
    server.shutdown()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_run_load_streams_the_chosen_api(stub, api):
    records = run_load(stub, requests=2, concurrency=1, prompt="Hi", max_tokens=3,
                       api=api)[0]
    assert [r["ok"] for r in records] == [True, True], records
    assert all(r["completion_tokens"] == 3 and r["tokens_source"] == "usage" for r in records)
    path, body = _Stub.seen[0]
    if api == "chat":
        assert path == "/v1/chat/completions" and "prompt" not in body
        assert body["messages"] == [{"role": "user", "content": "Hi"}]
        # the first token is the first chunk with content, not the role-only chunk
        assert all(r["ttft_ms"] >= ROLE_ONLY_DELAY_S * 1000 for r in records), records
    else:
        assert path == "/v1/completions" and body["prompt"] == "Hi" and "messages" not in body
        assert all(r["ttft_ms"] < ROLE_ONLY_DELAY_S * 1000 for r in records), records


def test_run_load_refuses_an_unknown_api(stub):
    with pytest.raises(ValueError, match="api must be one of completions, chat, not 'embed'"):
        run_load(stub, requests=1, concurrency=1, prompt="Hi", max_tokens=3, api="embed")
    assert _Stub.seen == []
