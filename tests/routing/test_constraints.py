from __future__ import annotations

import pytest
from django.test import override_settings

from gateways.breaker import breaker_for
from gateways.bulkhead import bulkhead_for
from routing.models import GatewayConfig
from routing.router import route
from tests.routing.conftest import GATEWAYS, facts

CASES = [
    ("disabled", {"enabled": False}, {}),
    ("currency_not_supported", {"currencies": ["EUR", "GBP"]}, {"currency": "USD"}),
    ("method_not_supported", {"methods": ["sepa_debit"]}, {"method": "card"}),
    ("country_not_supported", {"countries": ["DE"]}, {"country": "FR"}),
    ("country_not_supported", {"countries": ["DE"]}, {"country": ""}),
    ("amount_out_of_range", {"max_amount": 1999}, {"amount": 2000}),
    ("amount_out_of_range", {"min_amount": 2001}, {"amount": 2000}),
]


@pytest.mark.parametrize(("reason", "config", "payment"), CASES)
def test_each_constraint_filters_with_its_reason(reason: str, config: dict, payment: dict) -> None:
    GatewayConfig.objects.filter(name="sandbox_a").update(**config)

    decision = route(facts=facts(**payment), merchant_gateways=GATEWAYS)

    assert decision.gateways == ("sandbox_b",)
    assert decision.excluded == (("sandbox_a", reason),)
    assert [c.gateway for c in decision.candidates] == ["sandbox_b"]


@pytest.mark.parametrize(
    ("config", "payment"),
    [
        ({"currencies": ["usd"], "countries": ["us"]}, {"currency": "USD", "country": "US"}),
        ({"min_amount": 2000, "max_amount": 2000}, {"amount": 2000}),
        ({"currencies": [], "countries": []}, {"currency": "JPY", "country": ""}),
    ],
)
def test_payments_within_the_configuration_pass(config: dict, payment: dict) -> None:
    GatewayConfig.objects.filter(name="sandbox_a").update(**config)

    decision = route(facts=facts(**payment), merchant_gateways=["sandbox_a"])

    assert decision.gateways == ("sandbox_a",)
    assert decision.excluded == ()


def test_unknown_and_unconfigured_gateways_are_left_out() -> None:
    GatewayConfig.objects.filter(name="sandbox_b").delete()

    decision = route(facts=facts(), merchant_gateways=["nope", "sandbox_a", "sandbox_b"])

    assert decision.gateways == ("sandbox_a",)
    assert decision.excluded == (("nope", "unknown_gateway"), ("sandbox_b", "not_configured"))


def test_an_open_breaker_removes_the_gateway() -> None:
    for _ in range(10):
        breaker_for("sandbox_a").record_failure()

    decision = route(facts=facts(), merchant_gateways=GATEWAYS)

    assert decision.gateways == ("sandbox_b",)
    assert decision.excluded == (("sandbox_a", "breaker_open"),)


@override_settings(BULKHEAD_LIMIT=1)
def test_a_full_bulkhead_removes_the_gateway() -> None:
    bulkhead_for("sandbox_b").acquire()

    decision = route(facts=facts(), merchant_gateways=GATEWAYS)

    assert decision.gateways == ("sandbox_a",)
    assert decision.excluded == (("sandbox_b", "bulkhead_full"),)


def test_the_callers_availability_check_replaces_the_live_one() -> None:
    decision = route(
        facts=facts(), merchant_gateways=GATEWAYS, available=lambda name: name != "sandbox_b"
    )

    assert decision.gateways == ("sandbox_a",)
    assert decision.excluded == (("sandbox_b", "unavailable"),)


def test_no_candidate_leaves_an_empty_order_with_every_reason() -> None:
    GatewayConfig.objects.update(currencies=["EUR"])

    decision = route(facts=facts(currency="USD"), merchant_gateways=GATEWAYS)

    assert decision.gateways == ()
    assert decision.excluded == (
        ("sandbox_a", "currency_not_supported"),
        ("sandbox_b", "currency_not_supported"),
    )


def test_a_configuration_saved_in_the_admin_applies_at_once() -> None:
    before = route(facts=facts(), merchant_gateways=GATEWAYS)
    config = GatewayConfig.objects.get(name="sandbox_a")
    config.enabled = False
    config.save()

    after = route(facts=facts(), merchant_gateways=GATEWAYS)

    assert before.excluded == ()
    assert after.excluded == (("sandbox_a", "disabled"),)
