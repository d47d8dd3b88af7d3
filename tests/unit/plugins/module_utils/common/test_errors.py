"""Tests for the error hierarchy (common/errors.py)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.InvalidInputError,
        errors.NotFoundError,
        errors.ConflictError,
        errors.AuthError,
        errors.ConnectionFailedError,
        errors.TransientError,
        errors.WaitTimeout,
        errors.OperationFailedError,
    ],
)
def test_every_error_is_a_gpu_stack_error_with_a_message(cls):
    exc = cls("it broke", node="worker-1")
    assert isinstance(exc, errors.GpuStackError)
    assert str(exc) == "it broke"
    assert exc.fail_kwargs()["msg"] == "it broke"
    assert exc.fail_kwargs()["node"] == "worker-1"


def test_fail_kwargs_carries_details_and_message():
    exc = errors.NotFoundError("VM gpu-1 not found", name="gpu-1", datacenter="DC0")
    assert exc.fail_kwargs() == {"msg": "VM gpu-1 not found", "name": "gpu-1", "datacenter": "DC0"}


def test_chaining_keeps_the_original_and_reports_it():
    original = KeyError("metadata")
    with pytest.raises(errors.OperationFailedError) as info:
        try:
            raise original
        except KeyError as exc:
            raise errors.OperationFailedError("CSV failed", reason="InstallCheckFailed") from exc
    assert info.value.cause is original
    assert info.value.__cause__ is original
    kwargs = info.value.fail_kwargs()
    assert kwargs["reason"] == "InstallCheckFailed"
    assert kwargs["cause"] == "KeyError: 'metadata'"


def test_explicit_cause_detail_is_not_overwritten():
    try:
        raise ValueError("inner")
    except ValueError as inner:
        exc = errors.ConnectionFailedError("TLS failed", cause="certificate expired")
        exc.__cause__ = inner
    assert exc.fail_kwargs()["cause"] == "certificate expired"


def test_no_cause_key_without_chaining():
    assert "cause" not in errors.AuthError("denied").fail_kwargs()


@pytest.mark.parametrize("key", ["msg", "changed", "failed", "invocation"])
def test_reserved_detail_keys_are_refused(key):
    with pytest.raises(TypeError, match=key):
        raise errors.GpuStackError("x", **{key: 1})


def test_transient_error_retry_after_hint():
    exc = errors.TransientError("429 Too Many Requests", retry_after=7, status=429)
    assert exc.retry_after == 7
    assert exc.fail_kwargs() == {"msg": "429 Too Many Requests", "retry_after": 7, "status": 429}
    assert errors.TransientError("busy").retry_after is None
    assert "retry_after" not in errors.TransientError("busy").details


def test_wait_timeout_carries_present_and_missing():
    exc = errors.WaitTimeout("late", present=("a",), missing=("b", "c"), elapsed=3.5, timeout=3)
    assert exc.present == ["a"]
    assert exc.missing == ["b", "c"]
    kwargs = exc.fail_kwargs()
    assert kwargs["missing"] == ["b", "c"]
    assert kwargs["elapsed"] == 3.5
    assert kwargs["timeout"] == 3


def test_operation_failed_error_carries_the_remote_reason():
    exc = errors.OperationFailedError("task failed", reason="GenericVmConfigFault", task="task-12")
    assert exc.reason == "GenericVmConfigFault"
    assert exc.fail_kwargs()["reason"] == "GenericVmConfigFault"
    assert exc.fail_kwargs()["task"] == "task-12"


def test_catching_the_base_type_catches_subclasses():
    with pytest.raises(errors.GpuStackError):
        raise errors.ConflictError("exists with other owner")
