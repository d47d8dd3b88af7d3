"""The one retry helper of the stager: capped, jittered exponential backoff on TransientError."""

from __future__ import annotations

import logging
import random
import time

from gpu_stack_runtime.stager.errors import TransferError, TransientError

log = logging.getLogger("gpu_stack_runtime.stager")


def backoff_delays(retries: int, base: float = 0.5, cap: float = 30.0):
    """Delays before each retry: base * 2^n with full jitter, never above `cap`."""
    for attempt in range(retries):
        yield random.uniform(0, min(cap, base * (2**attempt)))


def retry_call(fn, *, retries: int, what: str, sleep=time.sleep, base: float = 0.5):
    """Call `fn()` until it does not raise TransientError, at most `retries` extra times."""
    delays = backoff_delays(retries, base=base)
    while True:
        try:
            return fn()
        except TransientError as exc:
            delay = next(delays, None)
            if delay is None:
                raise TransferError(f"{what}: giving up after {retries} retries: {exc}") from exc
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
            sleep(delay)
