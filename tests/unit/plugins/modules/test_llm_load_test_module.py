"""llm_load_test refuses bad options before it sends anything or writes a file."""

from __future__ import annotations

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
