"""The circuit breaker against the real Redis: rates, cool-down, half-open trials, processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings as django_settings
from django_redis import get_redis_connection
from pytest_django import Settings

from gateways.breaker import BreakerState, CircuitBreaker, breaker_for

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[2]

PARAMS: dict[str, Any] = {
    "failure_rate_threshold": 0.5,
    "minimum_calls": 4,
    "window_seconds": 10,
    "open_seconds": 0.3,
    "half_open_max_calls": 2,
    "half_open_successes": 2,
}


@pytest.fixture
def name() -> Iterator[str]:
    """A breaker name no other test uses; its Redis keys are deleted afterwards."""
    value = f"test-{uuid.uuid4().hex}"
    yield value
    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"aegispay:*{value}*"):
        redis.delete(key)


def make(name: str, **overrides: Any) -> CircuitBreaker:
    return CircuitBreaker(name, **{**PARAMS, **overrides})


def record(breaker: CircuitBreaker, outcomes: str) -> BreakerState:
    """Record ``s`` (success) and ``f`` (failure) outcomes in order; the state after the last."""
    states = [
        {"s": breaker.record_success, "f": breaker.record_failure}[outcome]()
        for outcome in outcomes
    ]
    return states[-1]


def opened(name: str, **overrides: Any) -> CircuitBreaker:
    breaker = make(name, **overrides)
    assert record(breaker, "ffff") is BreakerState.OPEN
    return breaker


def half_opened(name: str, **overrides: Any) -> CircuitBreaker:
    breaker = opened(name, **overrides)
    time.sleep(breaker.open_seconds + 0.05)
    assert breaker.state() is BreakerState.HALF_OPEN
    return breaker


def in_threads(count: int, call: Callable[[int], T]) -> list[T]:
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


# --- closed -> open ---


def test_a_new_breaker_is_closed_and_allows(name: str) -> None:
    breaker = make(name)

    snapshot = breaker.snapshot()

    assert (snapshot.state, snapshot.calls, snapshot.failures) == (BreakerState.CLOSED, 0, 0)
    assert snapshot.opened_at is None
    assert breaker.allow() is True


def test_stays_closed_until_minimum_calls_even_when_every_call_fails(name: str) -> None:
    breaker = make(name, minimum_calls=4)

    assert record(breaker, "fff") is BreakerState.CLOSED
    assert (breaker.snapshot().calls, breaker.snapshot().failures) == (3, 3)
    assert breaker.record_failure() is BreakerState.OPEN


@pytest.mark.parametrize(
    ("threshold", "outcomes", "expected"),
    [
        (0.5, "ssff", BreakerState.OPEN),  # 2/4 = 0.5 reaches the threshold
        (0.5, "sssff", BreakerState.CLOSED),  # 2/5 = 0.4 stays below
        (0.75, "sfff", BreakerState.OPEN),  # 3/4
        (0.75, "ssff", BreakerState.CLOSED),  # 2/4
        (0.3, "fsssssssss", BreakerState.CLOSED),  # 1/10
        (0.3, "ssssssffff", BreakerState.OPEN),  # 3/9 once the 9th call lands
        (0.5, "fffs", BreakerState.OPEN),  # a success can complete the minimum calls
    ],
)
def test_opens_when_the_failure_rate_reaches_the_threshold(
    name: str, threshold: float, outcomes: str, expected: BreakerState
) -> None:
    breaker = make(name, failure_rate_threshold=threshold, minimum_calls=4)

    assert record(breaker, outcomes) is expected
    assert breaker.state() is expected


def test_old_outcomes_slide_out_of_the_window(name: str) -> None:
    breaker = make(name, minimum_calls=2, window_seconds=0.4)
    breaker.record_failure()

    time.sleep(0.5)

    assert breaker.record_failure() is BreakerState.CLOSED
    assert (breaker.snapshot().calls, breaker.snapshot().failures) == (1, 1)


def test_window_memory_is_bounded_by_its_buckets(name: str) -> None:
    # 240 ms in 60 buckets of 4 ms.
    breaker = make(name, minimum_calls=10**6, window_seconds=0.24)
    redis = get_redis_connection("default")

    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        breaker.record_failure()

    # Every recorded call is a field write, yet at most 60 buckets of two fields each remain.
    assert redis.hlen(breaker.keys[1]) <= 2 * 60
    assert breaker.snapshot().calls > 0


# --- open ---


def test_an_open_breaker_refuses_and_says_when_it_opened(name: str) -> None:
    breaker = opened(name)

    snapshot = breaker.snapshot()

    assert [breaker.allow() for _ in range(5)] == [False] * 5
    assert snapshot.state is BreakerState.OPEN
    assert (snapshot.calls, snapshot.failures, snapshot.failure_rate) == (4, 4, 1.0)
    assert abs(datetime.now(UTC) - snapshot.opened_at) < timedelta(seconds=5)


def test_outcomes_reported_while_open_neither_count_nor_extend_the_cool_down(name: str) -> None:
    breaker = opened(name)
    opened_at = breaker.snapshot().opened_at

    breaker.record_failure()
    breaker.record_success()

    assert breaker.snapshot().opened_at == opened_at
    assert breaker.snapshot().calls == 4


def test_open_turns_half_open_after_the_cool_down(name: str) -> None:
    breaker = opened(name, open_seconds=0.3)

    assert breaker.state() is BreakerState.OPEN
    time.sleep(0.35)
    assert breaker.state() is BreakerState.HALF_OPEN


# --- half-open ---


def test_half_open_admits_at_most_the_configured_trials_among_racing_threads(name: str) -> None:
    breaker = half_opened(name, half_open_max_calls=3, half_open_successes=10)

    admitted = in_threads(20, lambda _: breaker.allow())

    assert admitted.count(True) == 3
    assert breaker.snapshot().half_open_trials == 3
    assert breaker.allow() is False


def test_a_finished_trial_frees_its_slot(name: str) -> None:
    breaker = half_opened(name, half_open_max_calls=1, half_open_successes=3)

    assert breaker.allow() is True
    assert breaker.allow() is False
    assert breaker.record_success() is BreakerState.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False


def test_cancel_gives_a_trial_slot_back(name: str) -> None:
    breaker = half_opened(name, half_open_max_calls=1)
    assert breaker.allow() is True

    breaker.cancel()

    assert breaker.snapshot().half_open_trials == 0
    assert breaker.allow() is True


def test_the_trial_of_a_crashed_worker_expires(name: str) -> None:
    breaker = half_opened(name, half_open_max_calls=1, trial_lease_seconds=0.2)
    assert breaker.allow() is True
    assert breaker.allow() is False

    time.sleep(0.25)

    assert breaker.allow() is True


def test_half_open_closes_after_the_configured_consecutive_successes(name: str) -> None:
    breaker = half_opened(name, half_open_successes=3, half_open_max_calls=3)

    assert [breaker.allow() for _ in range(3)] == [True, True, True]
    assert record(breaker, "ss") is BreakerState.HALF_OPEN
    assert breaker.record_success() is BreakerState.CLOSED
    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures, snapshot.opened_at) == (0, 0, None)
    assert breaker.allow() is True


def test_a_failure_in_half_open_reopens_with_a_new_cool_down(name: str) -> None:
    breaker = half_opened(name, open_seconds=0.3)
    first_opened_at = breaker.snapshot().opened_at
    assert breaker.allow() is True
    assert breaker.record_success() is BreakerState.HALF_OPEN

    assert breaker.record_failure() is BreakerState.OPEN

    assert breaker.snapshot().opened_at > first_opened_at
    assert breaker.allow() is False
    time.sleep(0.35)
    assert breaker.state() is BreakerState.HALF_OPEN
    # The success before the failure does not count: consecutive successes start again.
    assert breaker.record_success() is BreakerState.HALF_OPEN
    assert breaker.record_success() is BreakerState.CLOSED


def test_reset_closes_and_empties(name: str) -> None:
    breaker = opened(name)

    breaker.reset()

    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().calls == 0
    assert breaker.allow() is True


# --- shared by processes and threads ---

# Runs in a second Python process: reads breaker argv[1], then records 4 failures on argv[2].
OTHER_PROCESS = """
import sys
import django

django.setup()
from gateways.breaker import CircuitBreaker

params = dict(
    failure_rate_threshold=0.5, minimum_calls=4, window_seconds=10, open_seconds=30,
    half_open_max_calls=2, half_open_successes=2,
)
seen = CircuitBreaker(sys.argv[1], **params)
print(seen.state().value, seen.allow())
tripped = CircuitBreaker(sys.argv[2], **params)
print(*[tripped.record_failure().value for _ in range(4)])
"""


def test_the_state_is_shared_by_two_processes(name: str) -> None:
    opened_here = opened(f"{name}-a", open_seconds=30)
    tripped_there = make(f"{name}-b", open_seconds=30)

    completed = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, opened_here.name, tripped_there.name],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "aegispay.settings",
            "REDIS_URL": django_settings.REDIS_URL,
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert completed.stdout.splitlines() == ["open False", "closed closed closed open"]
    assert tripped_there.state() is BreakerState.OPEN
    assert tripped_there.allow() is False
    assert tripped_there.snapshot().failures == 4


def test_racing_threads_lose_no_outcome(name: str) -> None:
    breaker = make(name, minimum_calls=10**6)

    def hammer(index: int) -> None:
        record = [breaker.record_success, breaker.record_failure][index % 2]
        for _ in range(50):
            record()

    in_threads(8, hammer)

    snapshot = breaker.snapshot()
    assert (snapshot.calls, snapshot.failures) == (400, 200)


# --- configuration ---


def test_breaker_for_reads_settings(settings: Settings) -> None:
    settings.BREAKER_FAILURE_RATE = 0.25
    settings.BREAKER_MINIMUM_CALLS = 7
    settings.BREAKER_WINDOW_SECONDS = 12
    settings.BREAKER_OPEN_SECONDS = 3
    settings.BREAKER_HALF_OPEN_MAX_CALLS = 4
    settings.BREAKER_HALF_OPEN_SUCCESSES = 5
    settings.BREAKER_TRIAL_LEASE_SECONDS = 9

    breaker = breaker_for("sandbox_a")

    assert (
        breaker.name,
        breaker.failure_rate_threshold,
        breaker.minimum_calls,
        breaker.window_seconds,
        breaker.open_seconds,
        breaker.half_open_max_calls,
        breaker.half_open_successes,
        breaker.trial_lease_seconds,
    ) == ("sandbox_a", 0.25, 7, 12.0, 3.0, 4, 5, 9.0)


def test_breaker_for_defaults(settings: Settings) -> None:
    for setting in (
        "BREAKER_FAILURE_RATE",
        "BREAKER_MINIMUM_CALLS",
        "BREAKER_WINDOW_SECONDS",
        "BREAKER_OPEN_SECONDS",
        "BREAKER_HALF_OPEN_MAX_CALLS",
        "BREAKER_HALF_OPEN_SUCCESSES",
        "BREAKER_TRIAL_LEASE_SECONDS",
    ):
        delattr(settings, setting)
    settings.GATEWAY_TIMEOUT_SECONDS = 4

    breaker = breaker_for("sandbox_a")

    assert (
        breaker.failure_rate_threshold,
        breaker.minimum_calls,
        breaker.window_seconds,
        breaker.open_seconds,
        breaker.half_open_max_calls,
        breaker.half_open_successes,
        breaker.trial_lease_seconds,
    ) == (0.5, 10, 60.0, 30.0, 3, 2, 9.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"minimum_calls": 0},
        {"window_seconds": 0},
        {"open_seconds": -1},
        {"half_open_max_calls": 0},
        {"half_open_successes": 0},
        {"trial_lease_seconds": 0},
    ],
)
def test_out_of_range_parameters_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make("never-used", **overrides)
