"""Choosing gateways for an attempt: constraints, live metrics, scoring, a strategy.

:func:`route` is the one entry point. With ``facts`` it filters the merchant's gateways by
their configuration and live availability, scores the rest on live metrics, orders them by the
merchant's strategy and explains the result. Without ``facts`` (the call payments made before
routing existed) it keeps the merchant's order, leaving out unknown and unavailable gateways.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from routing.constraints import filter_gateways
from routing.metrics import gateway_stats_many, segment_for
from routing.scoring import effective_weights, score_candidates
from routing.selectors import gateway_specs, merchant_policy
from routing.strategies import ORDERS
from routing.types import Candidate, PaymentFacts, RouteDecision, RoutingPolicy

__all__ = ["Candidate", "PaymentFacts", "RouteDecision", "route"]


def route(
    *,
    facts: PaymentFacts | None = None,
    merchant_gateways: Sequence[str] | None = None,
    after: str | None = None,
    available: Callable[[str], bool] | None = None,
    configured: Sequence[str] | None = None,
    policy: RoutingPolicy | None = None,
    rng: random.Random | None = None,
) -> RouteDecision:
    """Order the merchant's gateways for the next attempt of a payment, best first.

    ``merchant_gateways`` (alias ``configured``, the old name) is the merchant's enabled set in
    its order. ``after`` is the gateway whose attempt just failed without charging: it is moved
    to the end of the order, so a retry goes to the next gateway first. ``available`` replaces
    the live breaker/bulkhead check (default: the real one). ``policy`` replaces the merchant's
    stored ``MerchantRouting``; ``rng`` seeds the ``success_rate`` strategy's sampling.

    The decision lists every candidate with its score and the inputs of the score, and every
    excluded gateway with its reason; an empty ``gateways`` means no gateway can take the
    payment (the caller fails it with ``no_gateway_available``). Reads PostgreSQL (two small
    queries) and Redis; Redis errors propagate.
    """
    order = list(
        dict.fromkeys(merchant_gateways if merchant_gateways is not None else configured or ())
    )
    if facts is None:
        filtered = filter_gateways(facts=None, gateways=order, specs=None, available=available)
        gateways = _last(list(filtered.passed), after)
        return RouteDecision(
            strategy="priority",
            gateways=tuple(gateways),
            excluded=filtered.excluded,
            after=after,
            notes=("no payment facts: the merchant's order",),
        )

    specs = gateway_specs(order)
    policy = policy if policy is not None else merchant_policy(facts.merchant_id)
    notes: list[str] = []
    strategy = policy.strategy
    if strategy not in ORDERS:
        notes.append(f"unknown strategy {strategy!r}: score")
        strategy = "score"
    filtered = filter_gateways(facts=facts, gateways=order, specs=specs, available=available)
    stats = gateway_stats_many(filtered.passed, breaker_states=filtered.breaker_states)
    weights = effective_weights(policy.weights)
    segment = segment_for(facts)
    scored = score_candidates(
        amount=facts.amount, gateways=filtered.passed, specs=specs, stats=stats, weights=weights
    )
    ordered, strategy_notes = ORDERS[strategy](
        scored, facts=facts, specs=specs, policy=policy, segment=segment, rng=rng
    )
    notes.extend(strategy_notes)
    names = [c.gateway for c in ordered]
    if after in names:
        notes.append(f"after: {after} failed without charging; tried last")
    names = _last(names, after)
    by_name = {c.gateway: c for c in ordered}
    return RouteDecision(
        strategy=strategy,
        gateways=tuple(names),
        excluded=filtered.excluded,
        candidates=tuple(by_name[n] for n in names),
        segment=segment,
        after=after,
        notes=tuple(notes),
        weights=weights,
    )


def _last(names: list[str], after: str | None) -> list[str]:
    """``names`` with ``after`` moved to the end (unchanged when it is not there)."""
    if after in names:
        names = [n for n in names if n != after] + [after]
    return names
