"""Network failures are classified by type (isinstance), not by the name of a module.

Needs the stager's libraries (huggingface_hub, boto3): runs in .venv-stager.
"""

from __future__ import annotations

import http.client

import pytest
from gpu_stack_runtime.stager.errors import TransientError

httpx2 = pytest.importorskip("httpx2")
urllib3 = pytest.importorskip("urllib3")
hub = pytest.importorskip("gpu_stack_runtime.stager.sources.hub")
s3 = pytest.importorskip("gpu_stack_runtime.stager.sources.s3")
NETWORK_ERRORS, HubSource, _S3Stream = hub.NETWORK_ERRORS, hub.HubSource, s3._S3Stream

# Same module name as urllib3's errors, but not one of its types: must not be retried.
_Impostor = type("ProtocolError", (Exception,), {"__module__": "urllib3.exceptions"})


class _Body:
    def __init__(self, exc):
        self.exc = exc

    def read(self, size):
        raise self.exc


@pytest.mark.parametrize("exc", [
    urllib3.exceptions.ProtocolError("connection broken"),
    urllib3.exceptions.ReadTimeoutError(None, "/k", "read timed out"),
    http.client.IncompleteRead(b"partial", 10),
])
def test_s3_body_failures_of_the_http_stack_are_transient(exc):
    with pytest.raises(TransientError, match=type(exc).__name__) as err:
        list(_S3Stream(_Body(exc), 0, None, "s3://b/k").chunks(10))
    assert err.value.__cause__ is exc


@pytest.mark.parametrize("exc", [_Impostor("x"), ValueError("bug")])
def test_s3_other_failures_propagate_unchanged(exc):
    with pytest.raises(type(exc)):
        list(_S3Stream(_Body(exc), 0, None, "s3://b/k").chunks(10))


class _Api:
    def __init__(self, exc):
        self.exc = exc

    def repo_info(self, *args, **kwargs):
        raise self.exc


def _hub(exc) -> HubSource:
    source = HubSource("org/m", revision="main", endpoint="http://127.0.0.1:9", client=None)
    source._api = _Api(exc)
    return source


def test_hub_transport_failures_are_transient():
    assert httpx2.TransportError in NETWORK_ERRORS
    with pytest.raises(TransientError, match="ConnectError"):
        _hub(httpx2.ConnectError("refused"))._repo_info()


@pytest.mark.parametrize("exc", [
    type("ConnectError", (Exception,), {"__module__": "httpx2._exceptions"})("x"),
    RuntimeError("bug"),
])
def test_hub_other_failures_propagate_unchanged(exc):
    with pytest.raises(type(exc)):
        _hub(exc)._repo_info()
