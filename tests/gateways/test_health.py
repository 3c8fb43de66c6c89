"""gateways/health.py: one read of a gateway's breaker and bulkhead, on the real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from gateways.breaker import BreakerState, breaker_for
from gateways.bulkhead import bulkhead_for
from gateways.health import gateway_available, gateways_health


@pytest.fixture(autouse=True)
def _limits(small_limits: None) -> None:
    """Every test here runs with the small limits of tests/gateways/conftest.py."""


@pytest.fixture
def name() -> Iterator[str]:
    """A gateway name no other test uses; its Redis state is removed afterwards."""
    gateway = f"health-{uuid.uuid4().hex}"
    yield gateway
    breaker_for(gateway).reset()
    bulkhead_for(gateway).reset()


def test_gateway_available_follows_breaker_and_bulkhead(name: str) -> None:
    breaker, bulkhead = breaker_for(name), bulkhead_for(name)
    assert gateway_available(name) is True

    held = [bulkhead.acquire(), bulkhead.acquire()]
    assert gateway_available(name) is False
    bulkhead.release(held[0])
    assert gateway_available(name) is True

    for _ in range(4):
        breaker.record_failure()
    assert gateway_available(name) is False
    time.sleep(0.35)
    assert gateway_available(name) is True


def test_health_reads_state_and_occupancy_of_each_gateway(name: str) -> None:
    other = f"{name}-other"
    try:
        bulkhead_for(name).acquire()
        for _ in range(4):
            breaker_for(other).record_failure()

        health = gateways_health([name, other, name])

        assert list(health) == [name, other]
        mine, theirs = health[name], health[other]
        assert (mine.breaker_state, mine.in_use, mine.limit) == (BreakerState.CLOSED, 1, 2)
        assert (mine.breaker_open, mine.bulkhead_full, mine.usable) == (False, False, True)
        assert (theirs.breaker_state, theirs.in_use) == (BreakerState.OPEN, 0)
        assert (theirs.breaker_open, theirs.usable) == (True, False)
    finally:
        breaker_for(other).reset()


def test_an_open_breaker_past_its_cool_down_reads_half_open_without_being_written(
    name: str,
) -> None:
    breaker = breaker_for(name)
    for _ in range(4):
        breaker.record_failure()
    time.sleep(0.35)

    assert gateways_health([name])[name].breaker_state is BreakerState.HALF_OPEN
    # The read computed the transition; the stored state is still the breaker's own "open".
    assert breaker._redis.hget(breaker.keys[0], "state") == b"open"


def test_a_full_bulkhead_is_not_usable(name: str) -> None:
    bulkhead = bulkhead_for(name)
    bulkhead.acquire()
    bulkhead.acquire()

    health = gateways_health([name])[name]

    assert (health.in_use, health.bulkhead_full, health.usable) == (2, True, False)


def test_no_gateways_no_round_trip() -> None:
    assert gateways_health([]) == {}
