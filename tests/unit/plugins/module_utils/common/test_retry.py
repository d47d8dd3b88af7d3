"""Tests for the retry strategy, predicate and opt-in (common/retry.py). No real sleeping."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import (
    Backoff,
    call_with_retries,
    is_transient,
    retry_on,
    with_retries,
)


class FakeSleep:
    def __init__(self):
        self.calls = []

    def __call__(self, seconds):
        self.calls.append(seconds)


class Flaky:
    """Fails with the given exceptions in order, then returns 'ok'."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.last_args = (args, kwargs)
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_backoff_without_jitter_is_capped_exponential():
    assert list(Backoff(tries=6, delay=1, factor=2, max_delay=5, jitter=False)) == [1, 2, 4, 5, 5]


def test_backoff_yields_tries_minus_one_pauses():
    assert list(Backoff(tries=1, jitter=False)) == []
    assert len(list(Backoff(tries=4))) == 3


def test_backoff_full_jitter_scales_by_the_random_draw():
    draws = iter([0.5, 0.25, 1.0])
    strategy = Backoff(tries=4, delay=2, factor=3, max_delay=10, rand=lambda: next(draws))
    assert list(strategy) == [1.0, 1.5, 10.0]


@pytest.mark.parametrize(
    "kwargs", [{"tries": 0}, {"delay": -1}, {"max_delay": -1}, {"factor": 0.5}]
)
def test_backoff_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_is_transient_default_predicate():
    assert is_transient(TransientError("busy"))
    assert not is_transient(AuthError("denied"))
    assert not is_transient(ValueError("x"))


def test_retry_on_types_and_condition():
    predicate = retry_on(KeyError, OSError, when=lambda exc: "again" in str(exc))
    assert predicate(OSError("try again"))
    assert not predicate(OSError("fatal"))
    assert not predicate(ValueError("try again"))
    assert retry_on(ValueError)(ValueError("anything"))
    with pytest.raises(ValueError):
        retry_on()


def test_transient_failures_are_retried_then_succeed():
    sleep = FakeSleep()
    func = Flaky(TransientError("busy"), TransientError("busy"))
    result = call_with_retries(
        func, 1, key="v", strategy=Backoff(tries=5, delay=1, jitter=False), sleep=sleep
    )
    assert result == "ok"
    assert func.calls == 3
    assert func.last_args == ((1,), {"key": "v"})
    assert sleep.calls == [1, 2]


def test_non_retryable_error_propagates_at_once():
    sleep = FakeSleep()
    func = Flaky(AuthError("denied"))
    with pytest.raises(AuthError):
        call_with_retries(func, strategy=Backoff(tries=5), sleep=sleep)
    assert func.calls == 1
    assert sleep.calls == []


def test_exhausted_attempts_reraise_the_last_error_with_attempt_count():
    sleep = FakeSleep()
    last = TransientError("still busy")
    func = Flaky(TransientError("busy"), TransientError("busy"), last)
    with pytest.raises(TransientError) as info:
        call_with_retries(func, strategy=Backoff(tries=3, delay=1, jitter=False), sleep=sleep)
    assert info.value is last
    assert info.value.details["attempts"] == 3
    assert func.calls == 3
    assert sleep.calls == [1, 2]


def test_retry_after_hint_lengthens_the_pause_up_to_the_cap():
    sleep = FakeSleep()
    func = Flaky(TransientError("429", retry_after=4), TransientError("429", retry_after=99))
    call_with_retries(
        func, strategy=Backoff(tries=3, delay=1, max_delay=10, jitter=False), sleep=sleep
    )
    assert sleep.calls == [4.0, 10]


def test_on_retry_callback_sees_attempt_error_and_pause():
    seen = []
    func = Flaky(TransientError("busy"))
    call_with_retries(
        func,
        strategy=Backoff(tries=2, delay=3, jitter=False),
        sleep=FakeSleep(),
        on_retry=lambda attempt, exc, pause: seen.append((attempt, str(exc), pause)),
    )
    assert seen == [(1, "busy", 3)]


def test_decorator_opt_in_with_custom_predicate():
    sleep = FakeSleep()
    calls = []

    @with_retries(Backoff(tries=4, delay=0.5, jitter=False), retry_on(ConnectionResetError), sleep)
    def fetch(name):
        """Fetch something."""
        calls.append(name)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return f"got {name}"

    assert fetch("node-1") == "got node-1"
    assert calls == ["node-1"] * 3
    assert sleep.calls == [0.5, 1.0]
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch something."


def test_decorator_default_strategy_is_used_when_none_given():
    sleep = FakeSleep()
    func = with_retries(sleep=sleep)(Flaky(*[TransientError("busy")] * 10))
    with pytest.raises(TransientError):
        func()
    assert len(sleep.calls) == Backoff().tries - 1
