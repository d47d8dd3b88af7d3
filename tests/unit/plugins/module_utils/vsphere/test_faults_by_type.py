"""vSphere faults are classified by their pyVmomi type, not by the name of their class."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import errors
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.faults import (
    is_retryable_fault,
    translate,
)


def _impostor(name: str) -> Exception:
    """An exception whose class is named like a vSphere fault but is not one."""
    return type(name, (Exception,), {"__module__": "vim.fault"})("named like a fault")


@pytest.mark.parametrize("name", ["TaskInProgress", "HostCommunication", "SystemError"])
def test_a_class_named_like_a_busy_fault_is_not_retried(name):
    exc = _impostor(name)
    assert not is_retryable_fault(exc)
    assert translate(exc, "x").__class__ is errors.OperationFailedError


@pytest.mark.parametrize("name", ["InvalidLogin", "ManagedObjectNotFound", "InvalidArgument",
                                  "InvalidPowerState"])
def test_a_class_named_like_a_classified_fault_is_not_classified(name):
    assert translate(_impostor(name), "x").__class__ is errors.OperationFailedError
