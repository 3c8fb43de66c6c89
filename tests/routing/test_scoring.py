from __future__ import annotations

from typing import Any

import pytest

from routing.metrics import record_outcome
from routing.models import MerchantRouting
from routing.router import route
from tests.routing.conftest import GATEWAYS, facts


def feed(gateway: str, outcome: str, count: int, latency_ms: int = 100) -> None:
    for _ in range(count):
        record_outcome(gateway=gateway, outcome=outcome, latency_ms=latency_ms)


def test_scores_follow_the_metrics_and_the_order_flips() -> None:
    feed("sandbox_a", "approved", 40)
    feed("sandbox_b", "declined", 40)
    first = route(facts=facts(), merchant_gateways=GATEWAYS)

    feed("sandbox_a", "declined", 200)
    feed("sandbox_b", "approved", 200)
    second = route(facts=facts(), merchant_gateways=GATEWAYS)

    assert first.strategy == "score"
    assert first.gateways == ("sandbox_a", "sandbox_b")
    assert second.gateways == ("sandbox_b", "sandbox_a")
    assert second.candidates[0].score > second.candidates[1].score


def test_latency_counts_in_the_score() -> None:
    feed("sandbox_a", "approved", 50, latency_ms=50)
    feed("sandbox_b", "approved", 50, latency_ms=900)

    decision = route(facts=facts(), merchant_gateways=["sandbox_b", "sandbox_a"])

    assert decision.gateways == ("sandbox_a", "sandbox_b")
    assert decision.candidates[0].inputs["latency"] == 1.0


def test_per_merchant_weights_change_the_choice(settings: Any) -> None:
    settings.ROUTING_EXPLORATION = 0  # weights alone decide here
    feed("sandbox_a", "approved", 50, latency_ms=50)
    feed("sandbox_b", "approved", 50, latency_ms=900)
    MerchantRouting.objects.create(
        merchant_id="mer_cost", weights={"success": 0, "latency": 0, "cost": 1, "health": 0}
    )

    default = route(facts=facts(merchant_id="mer_default"), merchant_gateways=GATEWAYS)
    by_cost = route(facts=facts(merchant_id="mer_cost"), merchant_gateways=GATEWAYS)

    assert default.gateways == ("sandbox_a", "sandbox_b")
    assert by_cost.gateways == ("sandbox_b", "sandbox_a")
    assert by_cost.weights == {"success": 0.0, "latency": 0.0, "cost": 1.0, "health": 0.0}
    assert by_cost.candidates[0].score == 1.0


def test_a_new_gateway_starts_at_the_prior_and_is_not_starved(sandbox_c: str) -> None:
    feed("sandbox_a", "approved", 6)
    feed("sandbox_a", "declined", 4)

    decision = route(facts=facts(), merchant_gateways=["sandbox_a", sandbox_c])
    inputs = {c.gateway: c.inputs for c in decision.candidates}

    assert decision.gateways == (sandbox_c, "sandbox_a")
    assert inputs[sandbox_c]["success"] == pytest.approx(0.8)
    assert inputs["sandbox_a"]["success"] == pytest.approx((6 + 0.8 * 20) / (10 + 20))


def test_exploration_tries_a_gateway_that_measured_rivals_would_starve(sandbox_c: str) -> None:
    """Without the bonus, sandbox_a's measured latency beats the prior and sandbox_c would
    never be chosen, so its prior would never meet data."""
    feed("sandbox_a", "approved", 200, latency_ms=40)

    decision = route(facts=facts(), merchant_gateways=["sandbox_a", sandbox_c])
    inputs = {c.gateway: c.inputs for c in decision.candidates}

    assert decision.gateways == (sandbox_c, "sandbox_a")
    assert inputs[sandbox_c]["exploration"] > inputs["sandbox_a"]["exploration"] > 0


def test_every_candidate_carries_the_inputs_of_its_score() -> None:
    feed("sandbox_a", "approved", 3)

    decision = route(facts=facts(amount=10_000), merchant_gateways=GATEWAYS)
    inputs = {c.gateway: c.inputs for c in decision.candidates}

    assert set(inputs["sandbox_a"]) == {
        "success",
        "latency",
        "cost",
        "health",
        "approved",
        "declined",
        "errors",
        "exploration",
        "samples",
        "latency_p95_ms",
        "fee",
    }
    assert (inputs["sandbox_a"]["fee"], inputs["sandbox_b"]["fee"]) == (320.0, 275.0)
    assert inputs["sandbox_b"]["cost"] == 1.0
