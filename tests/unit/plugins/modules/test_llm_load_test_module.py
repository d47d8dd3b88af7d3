"""llm_load_test refuses bad options before it sends anything or writes a file."""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.llmops.gpu_stack.plugins.modules import llm_load_test


@pytest.fixture
def nowhere():
    """A base URL where nothing listens: any request the module sent would fail there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("bad", "message"), [
    ({"requests": 0}, "requests must be at least 1, not 0"),
    ({"concurrency": 0}, "concurrency must be at least 1, not 0"),
    ({"rate": 0}, "rate must be above 0 requests per second, not 0.0"),
    ({"rate": -2.5}, "rate must be above 0 requests per second, not -2.5"),
    ({"max_error_rate": 1.5}, "max_error_rate must be between 0 and 1, not 1.5"),
    ({"prompt": ""}, "prompt must not be empty"),
])
def test_bad_options_fail_before_any_request_or_file(capsys, tmp_path, nowhere, bad, message):
    report = tmp_path / "out" / "load.json"
    args = {"base_url": nowhere, "model": "tiny", "api_key": "sk-secret-123",
            "wait_timeout": 600, "report_path": str(report), **bad}
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        llm_load_test.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert info.value.code == 1 and result["failed"] is True
    assert message in result["msg"]
    assert not (tmp_path / "out").exists()
    assert "sk-secret-123" not in out  # api_key is no_log


def _records(n):
    return [{"index": i, "ok": True, "status": 200, "start_s": i * 0.1, "latency_ms": 50.0 + i,
             "ttft_ms": 5.0, "completion_tokens": 8, "tokens_source": "usage", "error": None}
            for i in range(n)]


@pytest.fixture
def openai_present(monkeypatch):
    """The runs below never reach the openai client: let a venv without it run them."""
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import endpoint

    monkeypatch.setattr(endpoint, "HAS_OPENAI", True)


def _run(capsys, args, check_mode=False):
    with patch_module_args({**args, "_ansible_check_mode": check_mode}), \
            pytest.raises(SystemExit) as info:
        llm_load_test.main()
    return info.value.code, json.loads(capsys.readouterr().out)


def test_the_load_test_changes_nothing_its_report_is_an_artifact(capsys, tmp_path, nowhere,
                                                                 monkeypatch, openai_present):
    """A real run (the HTTP seam replaced by recorded requests) writes its report and
    still says changed=false, so a rerun of the site reports changed=0."""
    from datetime import UTC, datetime

    sent = []
    monkeypatch.setattr(llm_load_test.Endpoint, "http_client",
                        lambda self: contextlib.nullcontext())
    monkeypatch.setattr(llm_load_test, "wait_ready", lambda *args, **kwargs: None)

    def _load(endpoint, **kwargs):
        sent.append(kwargs["requests"])
        now = datetime.now(UTC)
        return _records(kwargs["requests"]), now, now, 0.5

    monkeypatch.setattr(llm_load_test, "run_load", _load)
    report = tmp_path / "out" / "load.json"
    args = {"base_url": nowhere, "model": "tiny", "requests": 3, "report_path": str(report)}
    for _run_number in range(2):
        code, result = _run(capsys, args)
        assert code == 0 and result["changed"] is False, result
        assert result["report"] == str(report)
        written = json.loads(report.read_text())
        assert written["counts"] == {"total": 3, "ok": 3, "failed": 0}
    assert sent == [3, 3]


def test_check_mode_sends_nothing_writes_nothing_and_is_unchanged(capsys, tmp_path, nowhere,
                                                                  monkeypatch, openai_present):
    monkeypatch.setattr(llm_load_test, "run_load", lambda *a, **k: pytest.fail("load sent"))
    report = tmp_path / "out" / "load.json"
    code, result = _run(capsys, {"base_url": nowhere, "model": "tiny",
                                 "report_path": str(report)}, check_mode=True)
    assert code == 0 and result["changed"] is False
    assert result["report"] == str(report) and "check mode" in result["msg"]
    assert not (tmp_path / "out").exists()
