"""The weighted score of each candidate gateway for one payment.

Four terms, each in [0, 1], combined with weights normalised by their sum:

* ``success``: approved / (approved + declined) under a Beta prior worth
  ``ROUTING_MIN_SAMPLES`` pseudo-observations at ``ROUTING_PRIOR_SUCCESS_RATE``, so a new
  gateway starts at the prior rather than at 0 or 1 and is not starved;
* ``latency``: (best p95 + 1) / (this p95 + 1) across the candidates, each p95 blended the same
  way towards ``ROUTING_PRIOR_LATENCY_MS``;
* ``cost``: (cheapest fee + 1) / (this fee + 1) across the candidates, the fee for this amount
  being ``fee_fixed + amount * fee_bps / 10000``;
* ``health``: from the metrics (error rate and breaker state, see ``GatewayStats.health``).

The weighted sum gets an exploration bonus (UCB1): ``ROUTING_EXPLORATION * sqrt(ln(N + 1) /
(n + 1))`` with ``n`` the candidate's samples and ``N`` all candidates' samples. A prior alone
does not keep a gateway from being starved: once a rival's measured latency and cost beat the
prior, the new gateway is never chosen and its prior never meets data. The bonus shrinks as a
gateway's samples grow, so exploration costs little once the numbers are known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from routing.conf import fsetting, isetting
from routing.metrics import GatewayStats
from routing.types import Candidate, GatewaySpec

TERMS = ("success", "latency", "cost", "health")


def default_weights() -> dict[str, float]:
    """The weights from settings ``ROUTING_WEIGHT_SUCCESS|LATENCY|COST|HEALTH``."""
    return {term: fsetting(f"ROUTING_WEIGHT_{term.upper()}") for term in TERMS}


def effective_weights(override: Mapping[str, float] | None = None) -> dict[str, float]:
    """The default weights with a merchant's ``override`` applied (unknown keys ignored)."""
    weights = default_weights()
    for term, value in (override or {}).items():
        if term in weights:
            weights[term] = max(0.0, float(value))
    return weights


def blended_success(stats: GatewayStats) -> float:
    prior_n = isetting("ROUTING_MIN_SAMPLES")
    decided = stats.approved + stats.declined
    return (
        (stats.approved + fsetting("ROUTING_PRIOR_SUCCESS_RATE") * prior_n) / (decided + prior_n)
        if decided + prior_n
        else fsetting("ROUTING_PRIOR_SUCCESS_RATE")
    )


def blended_latency(stats: GatewayStats) -> float:
    prior_n = isetting("ROUTING_MIN_SAMPLES")
    prior = fsetting("ROUTING_PRIOR_LATENCY_MS")
    if stats.latency_p95_ms is None:
        return prior
    n = stats.samples
    return (n * stats.latency_p95_ms + prior_n * prior) / (n + prior_n) if n + prior_n else prior


def score_candidates(
    *,
    amount: int,
    gateways: Sequence[str],
    specs: Mapping[str, GatewaySpec],
    stats: Mapping[str, GatewayStats],
    weights: Mapping[str, float],
) -> list[Candidate]:
    """A scored ``Candidate`` for each of ``gateways`` (same order), with its inputs."""
    if not gateways:
        return []
    fees = {g: specs[g].fee(amount) for g in gateways}
    latencies = {g: blended_latency(stats[g]) for g in gateways}
    best_fee = min(fees.values())
    best_latency = min(latencies.values())
    total = sum(weights.values()) or 1.0
    exploration = fsetting("ROUTING_EXPLORATION")
    all_samples = sum(stats[g].samples for g in gateways)
    candidates = []
    for gateway in gateways:
        s = stats[gateway]
        terms = {
            "success": blended_success(s),
            "latency": (best_latency + 1) / (latencies[gateway] + 1),
            "cost": (best_fee + 1) / (fees[gateway] + 1),
            "health": s.health,
        }
        bonus = exploration * math.sqrt(math.log(all_samples + 1) / (s.samples + 1))
        score = sum(weights.get(t, 0.0) * terms[t] for t in TERMS) / total + bonus
        inputs = {
            **terms,
            "exploration": bonus,
            "approved": s.approved,
            "declined": s.declined,
            "errors": s.errors,
            "latency_p95_ms": latencies[gateway],
            "fee": fees[gateway],
            "samples": s.samples,
        }
        candidates.append(Candidate(gateway=gateway, score=score, inputs=inputs))
    return candidates
