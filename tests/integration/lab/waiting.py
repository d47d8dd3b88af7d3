"""The integration tests' one wait: a predicate, a monotonic deadline, the last value in
the failure message. A predicate that trips over a not-yet-written field (``status``
still None) counts as "not yet"; one that raises anything else (an AssertionError for a
process that died) ends the wait at once. ``context`` adds what helps on a timeout (a
log's tail).

Every test waits with it, never with a hand-written deadline loop, and never sleeps
before asserting that something did not happen: it waits for the event that proves the
system processed the step, then asserts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0,
             interval: float = 0.05, context: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            last = f"not yet: {exc!r}"
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    extra = f"\n{context()}" if context else ""
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}{extra}")
