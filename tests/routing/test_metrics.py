from __future__ import annotations

import time

import pytest
from django.test import override_settings

from gateways.base import GatewayResult, Operation, Outcome
from gateways.breaker import breaker_for
from routing.metrics import gateway_stats, read_counts, record_outcome, record_result


def feed(gateway: str, outcome: str, count: int, latency_ms: int = 100, **kw: object) -> None:
    for _ in range(count):
        record_outcome(gateway=gateway, outcome=outcome, latency_ms=latency_ms, **kw)


def test_latency_percentiles_are_nearest_rank_over_the_samples() -> None:
    for latency in (400, 100, 123456, 200, 600, 300, 500):
        feed("sandbox_b", "approved", 1, latency_ms=latency)

    stats = gateway_stats("sandbox_b")

    # sorted: 100 200 300 400 500 600 123456; ranks ceil(0.5 * 7) = 4 and ceil(0.95 * 7) = 7
    assert (stats.latency_p50_ms, stats.latency_p95_ms) == (400.0, 123456.0)


def test_rates_latencies_and_health_follow_the_outcomes() -> None:
    feed("sandbox_a", "approved", 6, latency_ms=100)
    feed("sandbox_a", "declined", 2, latency_ms=200)
    feed("sandbox_a", "error", 2, latency_ms=1000)

    stats = gateway_stats("sandbox_a")

    assert (stats.approved, stats.declined, stats.errors, stats.samples) == (6, 2, 2, 10)
    assert stats.success_rate == 0.75
    assert stats.error_rate == 0.2
    assert (stats.latency_p50_ms, stats.latency_p95_ms) == (100.0, 1000.0)
    assert stats.breaker_state == "closed"
    assert stats.health == pytest.approx(1 - 2 / (10 + 20))


def test_a_gateway_without_samples_has_no_rates_and_full_health() -> None:
    stats = gateway_stats("sandbox_b")

    assert (stats.samples, stats.success_rate, stats.error_rate) == (0, None, None)
    assert (stats.latency_p50_ms, stats.health) == (None, 1.0)


def test_an_open_breaker_zeroes_the_health() -> None:
    for _ in range(10):
        breaker_for("sandbox_a").record_failure()

    assert gateway_stats("sandbox_a").health == 0.0


@override_settings(ROUTING_LATENCY_SAMPLES=5)
def test_the_latency_samples_are_capped() -> None:
    for latency in (900, 900, 900, 10, 20, 30, 40, 50):
        record_outcome(gateway="sandbox_a", outcome="approved", latency_ms=latency)

    stats = gateway_stats("sandbox_a")

    assert (stats.latency_p50_ms, stats.latency_p95_ms, stats.approved) == (30.0, 50.0, 8)


@override_settings(ROUTING_WINDOW_SECONDS=0.2, ROUTING_WINDOW_BUCKETS=2)
def test_outcomes_leave_the_sliding_window() -> None:
    feed("sandbox_a", "declined", 3)
    time.sleep(0.35)
    feed("sandbox_a", "approved", 1)

    stats = gateway_stats("sandbox_a")

    assert (stats.approved, stats.declined) == (1, 0)


def test_segments_are_counted_apart() -> None:
    feed("sandbox_a", "approved", 2, segment="USD:US:lt10000")
    feed("sandbox_a", "declined", 1, segment="EUR:DE:lt10000")

    counts = read_counts(["sandbox_a"], segment="USD:US:lt10000")["sandbox_a"]

    assert (counts.approved, counts.declined) == (2, 0)
    assert (gateway_stats("sandbox_a").approved, gateway_stats("sandbox_a").declined) == (2, 1)


@pytest.mark.parametrize(
    ("outcome", "code", "recorded", "counts"),
    [
        (Outcome.SUCCEEDED, "", True, (1, 0, 0)),
        (Outcome.DECLINED, "card_declined", True, (0, 1, 0)),
        (Outcome.RETRYABLE_ERROR, "gateway_error", True, (0, 0, 1)),
        (Outcome.UNKNOWN, "gateway_timeout", True, (0, 0, 1)),
        (Outcome.NOT_SENT, "circuit_open", False, (0, 0, 0)),
        (Outcome.NOT_SENT, "bulkhead_full", False, (0, 0, 0)),
    ],
)
def test_gateway_results_map_to_outcomes_and_unsent_calls_are_ignored(
    outcome: Outcome, code: str, recorded: bool, counts: tuple[int, int, int]
) -> None:
    result = GatewayResult(
        outcome=outcome,
        gateway="sandbox_a",
        operation=Operation.AUTHORIZE,
        reference="att_1",
        decline_code=code,
        latency_ms=12,
    )

    assert record_result(result) is recorded
    stats = gateway_stats("sandbox_a")
    assert (stats.approved, stats.declined, stats.errors) == counts


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        record_outcome(gateway="sandbox_a", outcome="maybe", latency_ms=1)
