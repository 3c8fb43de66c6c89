from __future__ import annotations

from routing.router import route


def test_keeps_the_merchants_order() -> None:
    assert route(configured=["sandbox_b", "sandbox_a"]).gateways == ("sandbox_b", "sandbox_a")


def test_starts_after_the_gateway_that_failed_and_wraps() -> None:
    decision = route(configured=["sandbox_a", "sandbox_b"], after="sandbox_a")
    assert decision.gateways == ("sandbox_b", "sandbox_a")


def test_leaves_out_unknown_and_unavailable_gateways_with_reasons() -> None:
    decision = route(
        configured=["nope", "sandbox_a", "sandbox_b"], available=lambda g: g != "sandbox_a"
    )
    assert decision.gateways == ("sandbox_b",)
    assert decision.excluded == (("nope", "unknown_gateway"), ("sandbox_a", "unavailable"))
