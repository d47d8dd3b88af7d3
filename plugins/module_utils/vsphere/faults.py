# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""vSphere faults mapped to the common error types; which of them are worth retrying."""

from __future__ import annotations

import http.client
import socket
import ssl

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConflictError,
    ConnectionFailedError,
    GpuStackError,
    InvalidInputError,
    NotFoundError,
    OperationFailedError,
    TransientError,
)

try:
    from pyVmomi import vim, vmodl
except ImportError:  # pragma: no cover
    vim = vmodl = None

# pyVmomi's fault types, matched with isinstance so a subclass (HostNotConnected <
# HostCommunication) maps like its parent. Empty without pyVmomi: nothing to classify.
if vim is not None:
    _TRANSIENT = (vim.fault.TaskInProgress, vim.fault.ConcurrentAccess,
                  vmodl.fault.HostCommunication, vmodl.fault.SystemError)
    _AUTH = (vim.fault.InvalidLogin, vim.fault.NotAuthenticated, vim.fault.NoPermission,
             vim.fault.NoPermissionOnAD)
    _NOT_FOUND = (vmodl.fault.ManagedObjectNotFound, vim.fault.NotFound)
    _INVALID = (vmodl.fault.InvalidArgument, vim.fault.InvalidDeviceSpec, vim.fault.InvalidName,
                vmodl.fault.InvalidRequest)
    _CONFLICT = (vim.fault.InvalidState, vim.fault.InvalidPowerState, vim.fault.InvalidVmConfig)
else:  # pragma: no cover
    _TRANSIENT = _AUTH = _NOT_FOUND = _INVALID = _CONFLICT = ()


def fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or ""
    return f"{fault_name(exc)}: {msg}" if msg else fault_name(exc)


def is_retryable_fault(exc: BaseException) -> bool:
    return isinstance(
        exc, (*_TRANSIENT, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
    )


def translate(exc: BaseException, what: str) -> GpuStackError:
    """The common error for an exception raised while doing ``what``."""
    if isinstance(exc, GpuStackError):
        return exc
    text = f"{what}: {fault_message(exc)}"
    details = {"fault": fault_name(exc)}
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailedError(
            f"{what}: TLS verification failed ({exc}); give ca_path with the vCenter CA "
            "or, only for a lab, validate_certs: false",
        )
    if is_retryable_fault(exc):
        return TransientError(text, **details)
    if isinstance(exc, (socket.error, http.client.HTTPException)):
        return ConnectionFailedError(f"{what}: cannot reach vCenter ({exc})")
    if isinstance(exc, _AUTH):
        return AuthError(text, **details)
    if isinstance(exc, _NOT_FOUND):
        return NotFoundError(text, **details)
    if isinstance(exc, _INVALID):
        return InvalidInputError(text, **details)
    if isinstance(exc, _CONFLICT):
        return ConflictError(text, **details)
    return OperationFailedError(text, reason=fault_message(exc), **details)
