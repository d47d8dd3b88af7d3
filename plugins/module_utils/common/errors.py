# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one error hierarchy of llmops.gpu_stack.

Every helper in ``module_utils`` raises one of these types; only a module's
``main()`` turns them into ``fail_json``::

    try:
        result = run(...)
    except GpuStackError as exc:
        module.fail_json(**exc.fail_kwargs())

API
---
``GpuStackError(msg, **details)``
    Base type. ``.msg`` is the human message, ``.details`` a dict of structured,
    JSON-friendly facts (names, counts, the remote reason...). ``fail_kwargs()``
    returns ``{"msg": msg, **details}`` plus ``cause`` (the text of the chained
    exception) when the error was raised ``from`` another one and no ``cause``
    detail was given. Detail keys that Ansible reserves in results (``msg``,
    ``failed``, ``changed``, ...) are refused with ``TypeError``: that is a bug
    in the caller, not a runtime condition.

Subclasses (pick the most specific one):

- ``InvalidInputError``: bad input, detected before any write.
- ``NotFoundError``: an object that must exist does not.
- ``ConflictError``: the object exists in a state that conflicts with the request
  (not retryable; a retryable HTTP 409 is a ``TransientError``).
- ``AuthError``: authentication failed or permission denied.
- ``ConnectionFailedError``: the endpoint cannot be reached, or TLS failed.
- ``TransientError``: worth retrying (server busy, HTTP 409/429/5xx, vSphere
  busy faults). Optional ``retry_after`` (seconds) is a hint for ``retry.py``.
- ``WaitTimeout``: a wait ran out of time; carries ``present``, ``missing``,
  ``elapsed`` and ``timeout`` (see ``wait.py``).
- ``OperationFailedError``: the remote side ran the operation and it failed
  (vSphere task error, OLM CSV phase Failed...); carries ``reason``.

Chaining keeps the original: ``raise NotFoundError("...") from exc`` leaves
``exc`` in ``__cause__`` (also available as ``.cause``).

This file is also the runtime's (``images/runtime/gpu_stack_runtime/common/errors.py``),
byte for byte: edit it here and copy it there; ``tests/unit/shared`` fails on any drift.
"""

from __future__ import annotations

RESERVED_DETAIL_KEYS = frozenset(
    {
        "msg",
        "failed",
        "changed",
        "skipped",
        "invocation",
        "exception",
        "warnings",
        "deprecations",
        "diff",
    }
)


class GpuStackError(Exception):
    """Base error: a message and structured details for ``fail_json``."""

    def __init__(self, msg: str, **details):
        bad = RESERVED_DETAIL_KEYS.intersection(details)
        if bad:
            raise TypeError(f"reserved result keys used as error details: {sorted(bad)}")
        super().__init__(msg)
        self.msg = msg
        self.details = details

    @property
    def cause(self) -> BaseException | None:
        """The exception this one was raised from, if any."""
        return self.__cause__

    def fail_kwargs(self) -> dict:
        """Keyword arguments for ``module.fail_json``."""
        kwargs = {"msg": self.msg}
        kwargs.update(self.details)
        if self.__cause__ is not None and "cause" not in kwargs:
            kwargs["cause"] = f"{type(self.__cause__).__name__}: {self.__cause__}"
        return kwargs

    def __str__(self) -> str:
        return self.msg


class InvalidInputError(GpuStackError):
    """Input that cannot be used; raised before anything is written."""


class NotFoundError(GpuStackError):
    """A required object does not exist."""


class ConflictError(GpuStackError):
    """The object exists in a state that conflicts with the request."""


class AuthError(GpuStackError):
    """Authentication failed or the account lacks a permission."""


class ConnectionFailedError(GpuStackError):
    """The endpoint cannot be reached, or the TLS handshake/verification failed."""


class TransientError(GpuStackError):
    """A failure worth retrying (busy server, 409/429/5xx, vSphere busy faults)."""

    def __init__(self, msg: str, retry_after: float | None = None, **details):
        if retry_after is not None:
            details["retry_after"] = retry_after
        super().__init__(msg, **details)
        self.retry_after = retry_after


class WaitTimeout(GpuStackError):
    """A wait ran out of time; says what is present and what is still missing."""

    def __init__(
        self,
        msg: str,
        present: list | tuple = (),
        missing: list | tuple = (),
        elapsed: float | None = None,
        timeout: float | None = None,
        **details,
    ):
        details.update(
            present=list(present),
            missing=list(missing),
            elapsed=elapsed,
            timeout=timeout,
        )
        super().__init__(msg, **details)
        self.present = list(present)
        self.missing = list(missing)
        self.elapsed = elapsed
        self.timeout = timeout


class OperationFailedError(GpuStackError):
    """The remote side ran the operation and reported failure, with its reason."""

    def __init__(self, msg: str, reason: str | None = None, **details):
        details["reason"] = reason
        super().__init__(msg, **details)
        self.reason = reason
