"""Tests for the wait helper (common/wait.py), with a fake clock: no real time passes."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    TransientError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)


class FakeClock:
    """A monotonic clock that only moves when sleep() is called."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


WORKERS = [f"worker-{i}" for i in range(1, 9)]


def joined_after(clock, schedule):
    """A check where worker i is ready once the clock passed schedule[i]."""
    start = clock.now

    def check():
        ready = [w for w, at in schedule.items() if clock.now - start >= at]
        return WaitStatus.of(WORKERS, ready, noun="workers joined")

    return check


def test_status_of_names_present_and_missing_in_expected_order():
    status = WaitStatus.of(["a", "b", "c", "a"], {"c", "a", "zzz"}, noun="pods ready")
    assert status.done is False
    assert status.present == ("a", "c")
    assert status.missing == ("b",)
    assert status.progress == "2 of 3 pods ready"
    assert WaitStatus.of(["a"], ["a"]).done is True


def test_returns_as_soon_as_done():
    clock = FakeClock()
    check = joined_after(clock, dict.fromkeys(WORKERS, 5))
    status = wait_for(check, timeout=60, interval=2, clock=clock, sleep=clock.sleep)
    assert status.done
    assert status.progress == "8 of 8 workers joined"
    assert clock.sleeps == [2, 2, 2]


def test_timeout_message_says_what_is_missing():
    clock = FakeClock()
    schedule = {w: (1 if i < 3 else 10_000) for i, w in enumerate(WORKERS)}
    with pytest.raises(WaitTimeout) as info:
        wait_for(
            joined_after(clock, schedule),
            timeout=300,
            what="Ray workers",
            interval=10,
            clock=clock,
            sleep=clock.sleep,
        )
    exc = info.value
    assert str(exc) == (
        "timed out after 300s waiting for Ray workers: 3 of 8 workers joined; "
        "missing: worker-4, worker-5, worker-6, worker-7, worker-8"
    )
    assert exc.missing == WORKERS[3:]
    assert exc.present == WORKERS[:3]
    assert exc.timeout == 300
    assert exc.elapsed == 300


def test_long_missing_lists_are_cut():
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match=r"missing: worker-1, .*worker-5, \.\.\. \(3 more\)$"):
        wait_for(joined_after(clock, {}), timeout=5, interval=1, clock=clock, sleep=clock.sleep)


def test_never_sleeps_past_the_deadline_and_checks_once_more_at_it():
    clock = FakeClock()
    calls = []

    def check():
        calls.append(clock.now)
        return WaitStatus(done=False, progress="nothing yet")

    with pytest.raises(WaitTimeout):
        wait_for(check, timeout=25, interval=10, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [10, 10, 5]
    assert calls[-1] - calls[0] == 25


def test_backoff_grows_interval_up_to_the_cap():
    clock = FakeClock()
    check = joined_after(clock, dict.fromkeys(WORKERS, 100))
    wait_for(
        check, timeout=1000, interval=5, backoff=2, max_interval=30, clock=clock, sleep=clock.sleep
    )
    assert clock.sleeps == [5, 10, 20, 30, 30, 30]


def test_progress_callback_runs_at_a_steady_pace_not_every_poll():
    clock = FakeClock()
    reports = []
    check = joined_after(clock, {w: 10 * i for i, w in enumerate(WORKERS, start=1)})
    wait_for(
        check,
        timeout=600,
        interval=1,
        progress=lambda status, elapsed: reports.append((elapsed, status.progress)),
        progress_every=30,
        clock=clock,
        sleep=clock.sleep,
    )
    assert [report[0] for report in reports] == [30, 60]
    assert reports[0][1] == "3 of 8 workers joined"
    assert len(clock.sleeps) == 80


def test_check_mode_is_a_no_op():
    def check():
        raise AssertionError("check must not run in check mode")

    status = wait_for(check, timeout=10, check_mode=True)
    assert status.done and status.skipped


def test_transient_errors_count_as_not_done_and_appear_in_the_timeout():
    clock = FakeClock()
    outcomes = iter([TransientError("API 503"), WaitStatus(done=True, progress="up")])

    def check():
        item = next(outcomes)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_for(check, timeout=10, interval=1, clock=clock, sleep=clock.sleep).progress == "up"

    def always_down():
        raise TransientError("API 503")

    with pytest.raises(WaitTimeout, match="last check failed: API 503"):
        wait_for(always_down, timeout=3, interval=1, clock=clock, sleep=clock.sleep)


def test_other_errors_propagate():
    def check():
        raise AuthError("token expired")

    with pytest.raises(AuthError):
        wait_for(check, timeout=10, sleep=lambda s: None)


@pytest.mark.parametrize(
    "kwargs", [{"timeout": -1}, {"timeout": 1, "interval": 0}, {"timeout": 1, "backoff": 0.5}]
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        wait_for(lambda: WaitStatus(done=True), **kwargs)
