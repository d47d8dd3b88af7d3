# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one retry mechanism: strategy, retryable decision and call-site opt-in kept apart.

Three pieces, in the spirit of amazon.aws ``module_utils/retries.py``:

1. The backoff **strategy**: ``Backoff(tries=5, delay=1.0, factor=2.0, max_delay=30.0,
   jitter=True, rand=random.random)``. Iterating it yields the ``tries - 1`` pauses
   between attempts: capped exponential (``delay * factor**n``, at most ``max_delay``),
   with "full jitter" (a uniform draw in ``[0, pause]``) unless ``jitter=False``.
   ``rand`` is injectable so tests are deterministic.
2. The **retryable decision**: a predicate ``exc -> bool``. ``is_transient`` (the
   default) says yes for ``TransientError`` only. ``retry_on(*types, when=None)``
   builds another predicate (types, optionally narrowed by a test on the exception).
3. The **call-site opt-in**: ``@with_retries(strategy, should_retry, sleep=time.sleep,
   on_retry=None)`` decorates a function; ``call_with_retries(func, *args, strategy=...,
   should_retry=..., sleep=..., on_retry=..., **kwargs)`` does the same for one call.

Each pause is ``max(strategy pause, exc.retry_after)`` when the error carries a
``retry_after`` hint (e.g. HTTP 429 Retry-After), still capped at ``max_delay``.
``on_retry(attempt, exc, pause)`` is called before each pause (for logging).
When the attempts run out, the last exception is re-raised unchanged (a
``GpuStackError`` gets ``details["attempts"]``). Errors that are not retryable
propagate at once. Translate SDK exceptions into ``errors.py`` types *inside* the
decorated function (or in a decorator stacked inside this one), so the predicate
sees our types.

This file is also the runtime's (``images/runtime/gpu_stack_runtime/common/retry.py``),
byte for byte: edit it here and copy it there; ``tests/unit/shared`` fails on any drift.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator

from .errors import (
    GpuStackError,
    TransientError,
)


class Backoff:
    """Capped exponential backoff with optional full jitter (the strategy)."""

    def __init__(
        self,
        tries: int = 5,
        delay: float = 1.0,
        factor: float = 2.0,
        max_delay: float = 30.0,
        jitter: bool = True,
        rand: Callable[[], float] = random.random,
    ):
        if tries < 1:
            raise ValueError("tries must be at least 1")
        if delay < 0 or max_delay < 0:
            raise ValueError("delay and max_delay must not be negative")
        if factor < 1:
            raise ValueError("factor must be at least 1")
        self.tries = tries
        self.delay = delay
        self.factor = factor
        self.max_delay = max_delay
        self.jitter = jitter
        self._rand = rand

    def __iter__(self) -> Iterator[float]:
        pause = self.delay
        for _attempt in range(self.tries - 1):
            capped = min(pause, self.max_delay)
            yield capped * self._rand() if self.jitter else capped
            pause *= self.factor


def is_transient(exc: BaseException) -> bool:
    """Default retryable decision: only ``TransientError`` is retried."""
    return isinstance(exc, TransientError)


def retry_on(
    *types: type[BaseException], when: Callable[[BaseException], bool] | None = None
) -> Callable[[BaseException], bool]:
    """Build a predicate: retry exceptions of ``types`` (and, if given, where ``when(exc)``)."""
    if not types:
        raise ValueError("retry_on needs at least one exception type")

    def _predicate(exc: BaseException) -> bool:
        return isinstance(exc, types) and (when is None or bool(when(exc)))

    return _predicate


def call_with_retries(
    func: Callable,
    *args,
    strategy: Backoff | None = None,
    should_retry: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    **kwargs,
):
    """Call ``func(*args, **kwargs)``, retrying per ``strategy`` while ``should_retry``."""
    strategy = strategy if strategy is not None else Backoff()
    pauses = iter(strategy)
    attempt = 1
    while True:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not should_retry(exc):
                raise
            pause = next(pauses, None)
            if pause is None:
                if isinstance(exc, GpuStackError):
                    exc.details["attempts"] = attempt
                raise
            hint = getattr(exc, "retry_after", None)
            if hint is not None:
                pause = min(max(pause, float(hint)), strategy.max_delay)
            if on_retry is not None:
                on_retry(attempt, exc, pause)
            sleep(pause)
            attempt += 1


def with_retries(
    strategy: Backoff | None = None,
    should_retry: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
):
    """Decorator form of ``call_with_retries`` (the call-site opt-in)."""

    def _decorate(func):
        @functools.wraps(func)
        def _wrapper(*args, **kwargs):
            return call_with_retries(
                func,
                *args,
                strategy=strategy,
                should_retry=should_retry,
                sleep=sleep,
                on_retry=on_retry,
                **kwargs,
            )

        return _wrapper

    return _decorate
