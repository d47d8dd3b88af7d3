"""The stager's retries: the one backoff of ``common/retry.py``, with the stager's opt-in.

``retry_call(fn, retries=N, what=...)`` makes at most ``N + 1`` attempts (``--retries``
counts the retries after the first attempt), that is ``Backoff(tries=N + 1)``: the same
count as every other caller of ``common/retry.py``. Only ``TransientError`` is retried
(the common decision); when the attempts run out it becomes a ``TransferError`` (the
stager's exit code for "the transfer kept failing").
"""

from __future__ import annotations

import logging
import time

from gpu_stack_runtime.common.retry import Backoff, call_with_retries, is_transient
from gpu_stack_runtime.stager.errors import TransferError, TransientError

log = logging.getLogger("gpu_stack_runtime.stager")

MAX_DELAY = 30.0


def backoff(retries: int, base: float = 0.5) -> Backoff:
    """The strategy: ``retries + 1`` attempts, ``base * 2^n`` with full jitter, capped."""
    return Backoff(tries=retries + 1, delay=base, factor=2.0, max_delay=MAX_DELAY, jitter=True)


def retry_call(fn, *, retries: int, what: str, sleep=time.sleep, base: float = 0.5):
    """Call ``fn()`` until it does not raise TransientError, at most ``retries`` extra times."""

    def _log(attempt: int, exc: BaseException, pause: float) -> None:
        log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", what, exc, pause,
                    attempt + 1, retries + 1)

    try:
        return call_with_retries(fn, strategy=backoff(retries, base), should_retry=is_transient,
                                 sleep=sleep, on_retry=_log)
    except TransientError as exc:
        raise TransferError(f"{what}: giving up after {retries} retries: {exc}") from exc
