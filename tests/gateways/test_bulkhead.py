"""The bulkhead (a distributed semaphore in Redis) under racing threads and expiring leases."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from django_redis import get_redis_connection
from pytest_django import Settings

from gateways.base import GatewayError
from gateways.bulkhead import Bulkhead, BulkheadFull, bulkhead_for

T = TypeVar("T")


@pytest.fixture
def name() -> Iterator[str]:
    """A bulkhead name no other test uses; its Redis key is deleted afterwards."""
    value = f"test-{uuid.uuid4().hex}"
    yield value
    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"aegispay:*{value}*"):
        redis.delete(key)


def in_threads(count: int, call: Callable[[int], T]) -> list[T]:
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_exactly_limit_of_twenty_racing_threads_get_a_slot(name: str) -> None:
    bulkhead = Bulkhead(name, limit=5, lease_seconds=30)

    tokens = in_threads(20, lambda _: bulkhead.acquire())

    held = [token for token in tokens if token is not None]
    assert len(held) == 5
    assert len(set(held)) == 5
    assert bulkhead.in_use() == 5
    assert bulkhead.acquire() is None


def test_slots_held_at_once_never_exceed_the_limit(name: str) -> None:
    bulkhead = Bulkhead(name, limit=4, lease_seconds=30)
    lock = threading.Lock()
    counts = {"held": 0, "peak": 0, "entered": 0}

    def churn(_: int) -> None:
        for _ in range(15):
            with contextlib.suppress(BulkheadFull), bulkhead.slot():
                with lock:
                    counts["held"] += 1
                    counts["entered"] += 1
                    counts["peak"] = max(counts["peak"], counts["held"])
                time.sleep(0.002)
                with lock:
                    counts["held"] -= 1

    in_threads(20, churn)

    assert counts["peak"] <= 4
    assert counts["entered"] >= 15
    assert bulkhead.in_use() == 0


def test_expired_leases_of_crashed_workers_are_reclaimed(name: str) -> None:
    bulkhead = Bulkhead(name, limit=1, lease_seconds=0.2)
    assert bulkhead.acquire() is not None
    assert bulkhead.acquire() is None

    time.sleep(0.25)

    assert bulkhead.in_use() == 0
    assert bulkhead.acquire() is not None
    assert bulkhead.in_use() == 1


def test_release_frees_only_the_given_token(name: str) -> None:
    bulkhead = Bulkhead(name, limit=2, lease_seconds=30)
    first, second = bulkhead.acquire(), bulkhead.acquire()

    assert bulkhead.release("not-a-token") is False
    assert bulkhead.in_use() == 2
    assert bulkhead.release(first) is True
    assert bulkhead.release(first) is False
    assert bulkhead.in_use() == 1
    assert bulkhead.acquire() is not None
    assert bulkhead.release(second) is True


def test_slot_raises_bulkhead_full_and_releases_on_exit(name: str) -> None:
    bulkhead = Bulkhead(name, limit=1, lease_seconds=30)

    with bulkhead.slot() as token:
        assert bulkhead.in_use() == 1
        with pytest.raises(BulkheadFull) as refused, bulkhead.slot():
            pass  # never reached
    assert isinstance(refused.value, GatewayError)
    assert (refused.value.name, refused.value.limit) == (name, 1)
    assert token
    assert bulkhead.in_use() == 0


def test_slot_is_released_when_the_block_raises(name: str) -> None:
    bulkhead = Bulkhead(name, limit=1, lease_seconds=30)

    with pytest.raises(RuntimeError), bulkhead.slot():
        raise RuntimeError("boom")

    assert bulkhead.in_use() == 0


def test_two_names_do_not_share_slots(name: str) -> None:
    first = Bulkhead(f"{name}-a", limit=1, lease_seconds=30)
    second = Bulkhead(f"{name}-b", limit=1, lease_seconds=30)

    assert first.acquire() is not None
    assert second.acquire() is not None
    assert (first.in_use(), second.in_use()) == (1, 1)


def test_bulkhead_for_reads_settings(settings: Settings) -> None:
    settings.BULKHEAD_LIMIT = 7
    settings.BULKHEAD_LEASE_SECONDS = 3.5

    bulkhead = bulkhead_for("sandbox_a")

    assert (bulkhead.name, bulkhead.limit, bulkhead.lease_seconds) == ("sandbox_a", 7, 3.5)


def test_bulkhead_for_defaults(settings: Settings) -> None:
    del settings.BULKHEAD_LIMIT
    del settings.BULKHEAD_LEASE_SECONDS
    settings.GATEWAY_TIMEOUT_SECONDS = 2

    bulkhead = bulkhead_for("sandbox_a")

    assert (bulkhead.limit, bulkhead.lease_seconds) == (20, 7.0)


@pytest.mark.parametrize(("limit", "lease"), [(0, 1.0), (1, 0.0)])
def test_out_of_range_parameters_are_refused(limit: int, lease: float) -> None:
    with pytest.raises(ValueError):
        Bulkhead("never-used", limit=limit, lease_seconds=lease)
