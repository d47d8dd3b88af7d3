"""The stager's typed errors. Each carries the process exit code the Job reports.

They belong to the one error hierarchy (``common/errors.py``, shared with the
controller): ``StageError`` is a ``GpuStackError``, and ``TransientError`` (worth
retrying; it never escapes a transfer) is the common one, which ``common/retry.py``
retries.
"""

from __future__ import annotations

from gpu_stack_runtime.common.errors import GpuStackError, TransientError

__all__ = [
    "BusyError",
    "ConfigError",
    "CredentialsError",
    "InsufficientSpaceError",
    "IntegrityError",
    "SourceChangedError",
    "SourceNotFoundError",
    "StageError",
    "TransferError",
    "TransientError",
    "UnsafeArchiveError",
]


class StageError(GpuStackError):
    """Base of every error the stager reports on purpose."""

    exit_code = 1
    kind = "error"


class ConfigError(StageError):
    """Bad or missing configuration, found before anything is written."""

    exit_code = 2
    kind = "config"


class CredentialsError(StageError):
    """Credentials missing, unreadable or refused by the source."""

    exit_code = 3
    kind = "credentials"


class SourceNotFoundError(StageError):
    """Repository, revision, bucket, prefix or URL does not exist."""

    exit_code = 4
    kind = "not_found"


class InsufficientSpaceError(StageError):
    """The volume cannot hold what would be transferred."""

    exit_code = 5
    kind = "no_space"


class IntegrityError(StageError):
    """Local data does not match its digest and cannot be fetched again (local source)."""

    exit_code = 6
    kind = "integrity"


class SourceChangedError(StageError):
    """The source changed while staging (size, ETag or digest differs from its listing)."""

    exit_code = 7
    kind = "source_changed"


class UnsafeArchiveError(StageError):
    """An archive member would land outside the destination (absolute, `..`, link)."""

    exit_code = 8
    kind = "unsafe_archive"


class TransferError(StageError):
    """The transfer kept failing after the retries (network, server errors)."""

    exit_code = 9
    kind = "transfer"


class BusyError(StageError):
    """Another stager holds the lock on this destination."""

    exit_code = 10
    kind = "busy"
