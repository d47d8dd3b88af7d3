from __future__ import annotations

import http.client
import ssl

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import errors
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.faults import (
    is_retryable_fault,
    translate,
)
from pyVmomi import vim, vmodl


@pytest.mark.parametrize(("exc", "kind"), [
    (vmodl.fault.HostNotConnected(msg="down"), errors.TransientError),
    (vim.fault.TaskInProgress(msg="busy"), errors.TransientError),
    (vmodl.fault.SystemError(msg="oops", reason="x"), errors.TransientError),
    (http.client.RemoteDisconnected("closed"), errors.TransientError),
    (vim.fault.InvalidLogin(msg="no"), errors.AuthError),
    (vim.fault.NoPermission(msg="no", privilegeId="X"), errors.AuthError),
    (vmodl.fault.ManagedObjectNotFound(msg="gone"), errors.NotFoundError),
    (vmodl.fault.InvalidArgument(msg="bad"), errors.InvalidInputError),
    (vim.fault.InvalidDeviceBacking(msg="bad"), errors.InvalidInputError),
    (vim.fault.InvalidPowerState(msg="on"), errors.ConflictError),
    (vim.fault.NoDiskSpace(msg="full", datastore="ds"), errors.OperationFailedError),
    (vim.fault.HostConfigFault(msg="x"), errors.OperationFailedError),
    (ssl.SSLError("verify failed"), errors.ConnectionFailedError),
    (ConnectionRefusedError("refused"), errors.ConnectionFailedError),
])
def test_translate(exc, kind):
    err = translate(exc, "doing it")
    assert err.__class__ is kind
    assert err.msg.startswith("doing it: ")


def test_fault_name_and_message_are_kept():
    err = translate(vim.fault.NoDiskSpace(msg="no space on ds1", datastore="ds1"), "reconfig")
    assert err.msg == "reconfig: NoDiskSpace: no space on ds1"
    assert err.details["fault"] == "NoDiskSpace"


def test_retryable_decision():
    assert is_retryable_fault(vmodl.fault.HostNotConnected())
    assert not is_retryable_fault(vim.fault.InvalidState())
    assert not is_retryable_fault(vim.fault.Timedout())
