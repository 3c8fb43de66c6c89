"""The one full-jitter backoff (common/backoff.py) and the schedules its callers keep."""

from __future__ import annotations

import random

import pytest
from django.test import override_settings

from common.backoff import backoff_ceiling, backoff_seconds
from outbox import relay
from payments import gateway
from webhooks.services import webhook_backoff_ceiling, webhook_backoff_seconds


def test_the_ceiling_grows_by_the_factor_from_the_base_up_to_the_cap() -> None:
    doubled = [backoff_ceiling(n, base=1.5, cap=100) for n in range(1, 9)]
    tripled = [backoff_ceiling(n, base=1, cap=100, factor=3) for n in range(1, 7)]

    assert doubled == [1.5, 3, 6, 12, 24, 48, 96, 100]
    assert tripled == [1, 3, 9, 27, 81, 100]


@pytest.mark.parametrize("attempt", [1, 0, -3])
def test_the_first_attempt_and_any_below_it_wait_up_to_the_base(attempt: int) -> None:
    assert backoff_ceiling(attempt, base=2.5, cap=60) == 2.5


@pytest.mark.parametrize("factor", [2, 2.0, 10.0])
def test_a_ceiling_too_large_for_a_float_is_the_cap(factor: float) -> None:
    assert backoff_ceiling(10**9, base=1.0, cap=60, factor=factor) == 60


def test_the_wait_is_fully_jittered_between_zero_and_the_ceiling() -> None:
    rng = random.Random(11)
    waits = [backoff_seconds(5, base=1, cap=60, rng=rng) for _ in range(500)]

    assert all(0 <= wait <= 16 for wait in waits)
    assert min(waits) < 1 and max(waits) > 15
    assert 6 < sum(waits) / len(waits) < 10
    assert len(set(waits)) == 500


def test_an_injected_generator_makes_the_waits_reproducible() -> None:
    first = [backoff_seconds(n, base=1, cap=60, rng=random.Random(3)) for n in range(1, 8)]
    again = [backoff_seconds(n, base=1, cap=60, rng=random.Random(3)) for n in range(1, 8)]
    expected = [random.Random(3).uniform(0, min(60, 2 ** (n - 1))) for n in range(1, 8)]

    assert first == again == expected


def test_without_a_generator_the_random_module_draws() -> None:
    random.seed(21)
    drawn = backoff_seconds(4, base=1, cap=60)
    random.seed(21)

    assert drawn == random.uniform(0, 8)


# --- the callers' schedules, each from its own settings ---


@override_settings(
    GATEWAY_RETRY_BASE_SECONDS=1.0, GATEWAY_RETRY_MAX_SECONDS=10.0, GATEWAY_RETRY_FACTOR=3.0
)
@pytest.mark.parametrize(("retries", "ceiling"), [(0, 1), (1, 3), (2, 9), (3, 10), (40, 10)])
def test_a_gateway_task_retry_waits_base_times_factor_to_its_retry_count(
    retries: int, ceiling: float
) -> None:
    random.seed(retries)
    drawn = gateway.backoff_seconds(retries)
    random.seed(retries)

    assert drawn == random.uniform(0, ceiling)


@override_settings(
    GATEWAY_TIMEOUT_SECONDS=1.0,
    PAYMENT_LOCK_MARGIN_SECONDS=1.0,
    RECONCILE_AFTER_SECONDS=2.0,
    RECONCILE_BACKOFF_MAX_SECONDS=100.0,
)
def test_the_reconciler_waits_at_least_the_lock_lifetime_then_doubles_to_its_cap() -> None:
    waits = [gateway.check_backoff_seconds(sends) for sends in (1, 2, 3, 6, 10**6)]

    assert gateway.lock_ttl_seconds() == 4.0
    assert waits == [4.0, 4.0, 8.0, 64.0, 100.0]


@override_settings(OUTBOX_RETRY_BASE_SECONDS=2.0, OUTBOX_RETRY_MAX_SECONDS=50.0)
@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 2), (3, 8), (5, 32), (6, 50), (99, 50)])
def test_a_refused_outbox_message_waits_base_doubled_per_attempt(
    attempts: int, ceiling: float
) -> None:
    random.seed(attempts)
    drawn = relay.backoff_seconds(attempts)
    random.seed(attempts)

    assert drawn == random.uniform(0, ceiling)


@override_settings(WEBHOOK_RETRY_BASE_SECONDS=30, WEBHOOK_RETRY_MAX_SECONDS=3600)
def test_a_webhook_retry_draws_from_the_generator_it_is_given() -> None:
    drawn = webhook_backoff_seconds(3, rng=random.Random(8))

    assert webhook_backoff_ceiling(3) == 120
    assert drawn == random.Random(8).uniform(0, 120)
