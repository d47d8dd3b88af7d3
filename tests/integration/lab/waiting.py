"""Polling for the lab's integration tests: a predicate, a monotonic deadline, the last
value in the failure message. A predicate that trips over a not-yet-written field
(``status`` still None) counts as "not yet"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            last = f"not yet: {exc!r}"
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
