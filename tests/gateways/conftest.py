"""Fixtures shared by the gateway tests."""

from __future__ import annotations

import pytest
from pytest_django import Settings


@pytest.fixture
def small_limits(settings: Settings) -> None:
    """Breakers that open after 4 calls and cool down in 0.3 s, bulkheads of 2 slots."""
    settings.BREAKER_FAILURE_RATE = 0.5
    settings.BREAKER_MINIMUM_CALLS = 4
    settings.BREAKER_WINDOW_SECONDS = 10
    settings.BREAKER_OPEN_SECONDS = 0.3
    settings.BREAKER_HALF_OPEN_MAX_CALLS = 1
    settings.BREAKER_HALF_OPEN_SUCCESSES = 1
    settings.BULKHEAD_LIMIT = 2
    settings.BULKHEAD_LEASE_SECONDS = 30
    settings.GATEWAY_TIMEOUT_SECONDS = 2.0
