from __future__ import annotations

import random
from collections import Counter

from routing.metrics import record_outcome, segment_for
from routing.models import GatewayConfig, MerchantRouting
from routing.router import route
from routing.strategies import order_split
from routing.types import Candidate, RoutingPolicy
from tests.routing.conftest import GATEWAYS, facts


def feed(gateway: str, outcome: str, count: int, segment: str) -> None:
    for _ in range(count):
        record_outcome(gateway=gateway, outcome=outcome, latency_ms=100, segment=segment)


def test_priority_follows_the_configured_priorities(sandbox_c: str) -> None:
    MerchantRouting.objects.create(merchant_id="mer_p", strategy="priority")
    GatewayConfig.objects.filter(name="sandbox_a").update(priority=9)

    decision = route(
        facts=facts(merchant_id="mer_p"), merchant_gateways=["sandbox_a", "sandbox_b", sandbox_c]
    )

    assert decision.strategy == "priority"
    assert decision.gateways == ("sandbox_b", sandbox_c, "sandbox_a")


def test_split_holds_its_percentages_over_10000_decisions() -> None:
    policy = RoutingPolicy(
        strategy="split", split={"sandbox_a": 70, "sandbox_b": 20, "sandbox_c": 10}
    )
    candidates = [Candidate(g, 0.5) for g in ("sandbox_a", "sandbox_b", "sandbox_c")]

    firsts = Counter(
        order_split(candidates, facts=facts(f"pay_{i}"), policy=policy)[0][0].gateway
        for i in range(10_000)
    )

    assert 6_800 <= firsts["sandbox_a"] <= 7_200
    assert 1_800 <= firsts["sandbox_b"] <= 2_200
    assert 800 <= firsts["sandbox_c"] <= 1_200


def test_split_through_the_router_holds_its_percentages() -> None:
    MerchantRouting.objects.create(
        merchant_id="mer_s", strategy="split", split={"sandbox_a": 70, "sandbox_b": 30}
    )

    firsts = Counter(
        route(facts=facts(f"pay_{i}", "mer_s"), merchant_gateways=GATEWAYS).gateways[0]
        for i in range(1_000)
    )

    assert 650 <= firsts["sandbox_a"] <= 750
    assert firsts["sandbox_a"] + firsts["sandbox_b"] == 1_000


def test_split_is_sticky_per_payment_and_falls_back_to_the_other_gateway() -> None:
    MerchantRouting.objects.create(
        merchant_id="mer_s", strategy="split", split={"sandbox_a": 50, "sandbox_b": 50}
    )
    decisions = [
        route(facts=facts(f"pay_{i}", "mer_s"), merchant_gateways=GATEWAYS) for i in range(40)
    ]

    again = [
        route(facts=facts(f"pay_{i}", "mer_s"), merchant_gateways=list(reversed(GATEWAYS)))
        for i in range(40)
    ]

    assert [d.gateways for d in again] == [d.gateways for d in decisions]
    assert {d.gateways[0] for d in decisions} == {"sandbox_a", "sandbox_b"}
    assert all(len(d.gateways) == 2 for d in decisions)


def test_a_retry_after_a_failure_goes_to_the_next_gateway(sandbox_c: str) -> None:
    MerchantRouting.objects.create(merchant_id="mer_s", strategy="split", split={"sandbox_a": 100})
    gateways = ["sandbox_a", "sandbox_b", sandbox_c]

    first = route(facts=facts("pay_x", "mer_s"), merchant_gateways=gateways)
    retry = route(facts=facts("pay_x", "mer_s"), merchant_gateways=gateways, after="sandbox_a")

    assert first.gateways[0] == "sandbox_a"
    assert retry.gateways[-1] == "sandbox_a"
    assert retry.gateways[:2] == first.gateways[1:]


RULES = [
    {"if": {"currency": "EUR", "amount_gte": 100_000}, "gateway": "sandbox_c"},
    {"if": {"metadata": {"tier": "gold"}}, "gateway": "sandbox_b"},
    {"if": {"country": ["DE", "AT"]}, "gateway": "sandbox_a"},
    {"if": {"method": "card", "amount_lt": 500}, "gateway": "sandbox_b"},
]


def test_rules_pin_gateways_in_rule_order(sandbox_c: str) -> None:
    MerchantRouting.objects.create(merchant_id="mer_r", strategy="rules", rules=RULES)
    gateways = ["sandbox_a", "sandbox_b", sandbox_c]

    big_eur_gold_de = route(
        facts=facts(
            merchant_id="mer_r",
            currency="EUR",
            amount=150_000,
            country="DE",
            metadata={"tier": "gold"},
        ),
        merchant_gateways=gateways,
    )
    gold_de = route(
        facts=facts(merchant_id="mer_r", country="DE", metadata={"tier": "gold"}),
        merchant_gateways=gateways,
    )
    de = route(facts=facts(merchant_id="mer_r", country="DE"), merchant_gateways=gateways)
    small = route(facts=facts(merchant_id="mer_r", amount=100), merchant_gateways=gateways)
    none = route(facts=facts(merchant_id="mer_r", country="FR"), merchant_gateways=gateways)

    assert big_eur_gold_de.gateways == (sandbox_c, "sandbox_b", "sandbox_a")
    assert gold_de.gateways[:2] == ("sandbox_b", "sandbox_a")
    assert de.gateways[0] == "sandbox_a"
    assert small.gateways[0] == "sandbox_b"
    assert none.notes == ("rules: no rule matched; by score",)
    assert len(none.gateways) == 3


def test_a_rule_whose_gateway_cannot_take_the_payment_yields_to_the_next_match() -> None:
    MerchantRouting.objects.create(merchant_id="mer_r", strategy="rules", rules=RULES)
    GatewayConfig.objects.filter(name="sandbox_b").update(enabled=False)

    decision = route(
        facts=facts(merchant_id="mer_r", country="DE", metadata={"tier": "gold"}),
        merchant_gateways=GATEWAYS,
    )

    assert decision.gateways == ("sandbox_a",)
    assert decision.notes[0] == "rules: rule 1 matched but sandbox_b is not a candidate"


def test_success_rate_moves_traffic_away_from_a_degraded_gateway() -> None:
    MerchantRouting.objects.create(merchant_id="mer_b", strategy="success_rate")
    payment = facts(merchant_id="mer_b")
    segment = segment_for(payment)
    rng = random.Random(4)
    feed("sandbox_a", "approved", 90, segment)
    feed("sandbox_a", "declined", 10, segment)
    feed("sandbox_b", "approved", 70, segment)
    feed("sandbox_b", "declined", 30, segment)
    before = Counter(
        route(facts=payment, merchant_gateways=GATEWAYS, rng=rng).gateways[0] for _ in range(200)
    )

    feed("sandbox_a", "declined", 150, segment)
    after = Counter(
        route(facts=payment, merchant_gateways=GATEWAYS, rng=rng).gateways[0] for _ in range(200)
    )

    assert before["sandbox_a"] >= 190
    assert after["sandbox_a"] <= 10


def test_success_rate_learns_per_segment() -> None:
    MerchantRouting.objects.create(merchant_id="mer_b", strategy="success_rate")
    usd = facts(merchant_id="mer_b", currency="USD")
    eur = facts(merchant_id="mer_b", currency="EUR", country="DE")
    rng = random.Random(5)
    feed("sandbox_a", "approved", 60, segment_for(usd))
    feed("sandbox_b", "declined", 60, segment_for(usd))
    feed("sandbox_a", "declined", 60, segment_for(eur))
    feed("sandbox_b", "approved", 60, segment_for(eur))

    usd_firsts = Counter(
        route(facts=usd, merchant_gateways=GATEWAYS, rng=rng).gateways[0] for _ in range(100)
    )
    eur_firsts = Counter(
        route(facts=eur, merchant_gateways=GATEWAYS, rng=rng).gateways[0] for _ in range(100)
    )

    assert usd_firsts["sandbox_a"] >= 95
    assert eur_firsts["sandbox_b"] >= 95
