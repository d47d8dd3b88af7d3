# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one wait helper: predicate, monotonic clock, timeout, "what is missing" on timeout.

API
---
``WaitStatus(done, present=(), missing=(), progress="", skipped=False)``
    What a check returns. ``WaitStatus.of(expected, ready, noun="ready")`` builds one
    from the names expected and the names found ready, with a progress line such as
    ``"3 of 8 workers joined"`` (``noun="workers joined"``).

``wait_for(check, *, timeout, what="resources", interval=2.0, backoff=1.0,
max_interval=30.0, progress=None, progress_every=30.0, check_mode=False,
tolerate=(TransientError,), clock=time.monotonic, sleep=time.sleep) -> WaitStatus``
    Calls ``check()`` until it returns a status with ``done`` set, pausing
    ``interval`` seconds between checks (multiplied by ``backoff`` after each pause,
    capped at ``max_interval``; never past the deadline). The deadline comes from
    ``clock`` (monotonic), and one last check always runs at the deadline. On timeout
    it raises ``WaitTimeout`` whose message names what is missing, e.g.
    ``"timed out after 300s waiting for workers: 3 of 8 workers joined; missing:
    worker-5, worker-6, worker-7"`` (long lists are cut after 5 names).
    ``progress(status, elapsed)`` is called at a steady pace: at most once per
    ``progress_every`` seconds of the clock, never on every poll.
    Exceptions of the ``tolerate`` types raised by ``check`` count as "not done yet"
    (the API blinked); anything else propagates.
    ``check_mode=True`` is the no-op path: ``check`` is not called, and a status with
    ``done=True, skipped=True`` is returned at once (nothing was changed, so there is
    nothing to wait for).

``clock`` and ``sleep`` are injectable so tests run instantly with a fake clock.

This file is also the runtime's (``images/runtime/gpu_stack_runtime/common/wait.py``),
byte for byte: edit it here and copy it there; ``tests/unit/shared`` fails on any drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import (
    TransientError,
    WaitTimeout,
)

MAX_NAMES_IN_MESSAGE = 5


@dataclass(frozen=True)
class WaitStatus:
    """The outcome of one check."""

    done: bool
    present: tuple = ()
    missing: tuple = ()
    progress: str = ""
    skipped: bool = False

    @classmethod
    def of(cls, expected: Iterable[str], ready: Iterable[str], noun: str = "ready"):
        """Status from the expected names and the names found ready."""
        expected = list(dict.fromkeys(expected))
        ready_set = set(ready)
        present = tuple(name for name in expected if name in ready_set)
        missing = tuple(name for name in expected if name not in ready_set)
        return cls(
            done=not missing,
            present=present,
            missing=missing,
            progress=f"{len(present)} of {len(expected)} {noun}",
        )


def _names(names: tuple) -> str:
    shown = ", ".join(str(name) for name in names[:MAX_NAMES_IN_MESSAGE])
    rest = len(names) - MAX_NAMES_IN_MESSAGE
    return f"{shown}, ... ({rest} more)" if rest > 0 else shown


def _timeout_message(what: str, status: WaitStatus, elapsed: float, error: str) -> str:
    parts = [f"timed out after {elapsed:.0f}s waiting for {what}"]
    detail = []
    if status.progress:
        detail.append(status.progress)
    if status.missing:
        detail.append(f"missing: {_names(status.missing)}")
    if error:
        detail.append(f"last check failed: {error}")
    if detail:
        parts.append("; ".join(detail))
    return ": ".join(parts)


def wait_for(
    check: Callable[[], WaitStatus],
    *,
    timeout: float,
    what: str = "resources",
    interval: float = 2.0,
    backoff: float = 1.0,
    max_interval: float = 30.0,
    progress: Callable[[WaitStatus, float], None] | None = None,
    progress_every: float = 30.0,
    check_mode: bool = False,
    tolerate: tuple = (TransientError,),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitStatus:
    """Wait until ``check()`` reports done, or raise ``WaitTimeout`` naming what is missing."""
    if timeout < 0 or interval <= 0 or backoff < 1:
        raise ValueError("need timeout >= 0, interval > 0 and backoff >= 1")
    if check_mode:
        return WaitStatus(done=True, progress="check mode: wait skipped", skipped=True)
    start = clock()
    last_progress = start
    status = WaitStatus(done=False, progress="not checked yet")
    error = ""
    pause = interval
    while True:
        try:
            status = check()
            error = ""
        except tolerate as exc:
            error = str(exc)
        elapsed = clock() - start
        if status.done and not error:
            return status
        if elapsed >= timeout:
            raise WaitTimeout(
                _timeout_message(what, status, elapsed, error),
                present=status.present,
                missing=status.missing,
                elapsed=round(elapsed, 3),
                timeout=timeout,
            )
        if progress is not None and clock() - last_progress >= progress_every:
            progress(status, elapsed)
            last_progress = clock()
        sleep(min(pause, timeout - elapsed))
        pause = min(pause * backoff, max_interval)
