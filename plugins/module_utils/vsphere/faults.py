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

# Fault class names (vim.fault.X / vmodl.fault.X), matched along the fault's MRO so a
# subclass (HostNotConnected < HostCommunication) maps like its parent.
_TRANSIENT = {"TaskInProgress", "ConcurrentAccess", "HostCommunication", "SystemError"}
_AUTH = {"InvalidLogin", "NotAuthenticated", "NoPermission", "NoPermissionOnAD"}
_NOT_FOUND = {"ManagedObjectNotFound", "NotFound"}
_INVALID = {"InvalidArgument", "InvalidDeviceSpec", "InvalidName", "InvalidRequest"}
_CONFLICT = {"InvalidState", "InvalidPowerState", "InvalidVmConfig"}


def fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def fault_message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None) or ""
    return f"{fault_name(exc)}: {msg}" if msg else fault_name(exc)


def _mro_names(exc: BaseException) -> set[str]:
    return {cls.__name__.rsplit(".", 1)[-1] for cls in type(exc).__mro__}


def is_retryable_fault(exc: BaseException) -> bool:
    return bool(_mro_names(exc) & _TRANSIENT) or isinstance(
        exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
    )


def translate(exc: BaseException, what: str) -> GpuStackError:
    """The common error for an exception raised while doing ``what``."""
    if isinstance(exc, GpuStackError):
        return exc
    names = _mro_names(exc)
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
    if names & _AUTH:
        return AuthError(text, **details)
    if names & _NOT_FOUND:
        return NotFoundError(text, **details)
    if names & _INVALID:
        return InvalidInputError(text, **details)
    if names & _CONFLICT:
        return ConflictError(text, **details)
    return OperationFailedError(text, reason=fault_message(exc), **details)
