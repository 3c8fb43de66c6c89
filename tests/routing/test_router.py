from __future__ import annotations

import json
from typing import Any

from gateways.breaker import breaker_for
from gateways.health import gateway_available
from routing.metrics import record_outcome
from routing.router import RouteDecision, route
from tests.routing.conftest import GATEWAYS, facts


def test_the_old_signature_keeps_the_merchants_order() -> None:
    assert route(configured=["sandbox_b", "sandbox_a"]).gateways == ("sandbox_b", "sandbox_a")


def test_the_old_signature_moves_the_failed_gateway_last(sandbox_c: str) -> None:
    decision = route(configured=["sandbox_a", "sandbox_b", sandbox_c], after="sandbox_a")

    assert decision.gateways == ("sandbox_b", sandbox_c, "sandbox_a")


def test_the_old_signature_leaves_out_unknown_and_unavailable_gateways_with_reasons() -> None:
    decision = route(
        configured=["nope", "sandbox_a", "sandbox_b"], available=lambda g: g != "sandbox_a"
    )

    assert decision.gateways == ("sandbox_b",)
    assert decision.excluded == (("nope", "unknown_gateway"), ("sandbox_a", "unavailable"))


def test_a_failed_gateway_goes_last_whatever_its_score(settings: Any) -> None:
    settings.ROUTING_EXPLORATION = 0  # the measured score alone puts sandbox_a first
    for _ in range(50):
        record_outcome(gateway="sandbox_a", outcome="approved", latency_ms=10)

    first = route(facts=facts(), merchant_gateways=GATEWAYS)
    retry = route(facts=facts(), merchant_gateways=GATEWAYS, after="sandbox_a")

    assert first.gateways == ("sandbox_a", "sandbox_b")
    assert retry.gateways == ("sandbox_b", "sandbox_a")
    assert retry.after == "sandbox_a"


def test_the_decision_explains_itself_as_json() -> None:
    record_outcome(gateway="sandbox_a", outcome="declined", latency_ms=10)

    decision = route(facts=facts(), merchant_gateways=["nope", *GATEWAYS])
    stored = json.loads(json.dumps(decision.as_dict()))

    assert isinstance(decision, RouteDecision)
    assert stored["strategy"] == "score"
    assert stored["gateways"] == list(decision.gateways)
    assert stored["excluded"] == [{"gateway": "nope", "reason": "unknown_gateway"}]
    assert [c["gateway"] for c in stored["candidates"]] == list(decision.gateways)
    assert stored["candidates"][0]["inputs"]["success"] > 0
    assert stored["segment"] == "USD:US:lt10000"
    assert stored["weights"] == {"success": 0.5, "latency": 0.3, "cost": 0.2, "health": 0.2}


def test_with_facts_the_real_availability_check_gives_the_precise_reason() -> None:
    for _ in range(10):
        breaker_for("sandbox_a").record_failure()

    old = route(configured=GATEWAYS, available=gateway_available)
    new = route(facts=facts(), merchant_gateways=GATEWAYS, available=gateway_available)

    assert old.excluded == (("sandbox_a", "unavailable"),)
    assert new.excluded == (("sandbox_a", "breaker_open"),)
