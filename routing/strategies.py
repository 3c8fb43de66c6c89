"""Strategies: each orders the scored candidates into the full fallback order.

* ``score``: highest score first (ties keep the merchant's order).
* ``priority``: ``GatewayConfig.priority`` ascending (ties keep the merchant's order).
* ``split``: the payment's bucket (a hash of its id, so a payment always lands on the same
  gateway) picks one gateway by the merchant's percentages; the rest follow by score.
* ``rules``: the gateways of the matching rules, in rule order, come first (the first matching
  rule's gateway leads); the rest follow by score.
* ``success_rate``: Thompson sampling. For each candidate, draw from
  Beta(1 + approved + w * p, 1 + declined + w * (1 - p)) of the payment's segment, where p is
  the gateway-wide approval rate (Laplace-smoothed) and w = min(gateway-wide decided count,
  ``ROUTING_SEGMENT_PRIOR_WEIGHT``); order by the draws. Counts are windowed, so a gateway
  whose approvals drop loses traffic without anyone editing a rule.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from routing.conf import isetting
from routing.metrics import read_counts
from routing.types import Candidate, GatewaySpec, PaymentFacts, RoutingPolicy

STRATEGIES = ("score", "priority", "split", "rules", "success_rate")

_rng = random.Random()  # noqa: S311 - exploration, not security

Ordered = tuple[list[Candidate], list[str]]


def by_score(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: -c.score)


def order_score(candidates: Sequence[Candidate], **_: Any) -> Ordered:
    return by_score(candidates), []


def order_priority(
    candidates: Sequence[Candidate], *, specs: Mapping[str, GatewaySpec], **_: Any
) -> Ordered:
    return sorted(candidates, key=lambda c: specs[c.gateway].priority), []


def split_point(payment_id: str) -> float:
    """A stable number in [0, 1) for the payment (the same in every process)."""
    digest = hashlib.sha256(payment_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def order_split(
    candidates: Sequence[Candidate], *, facts: PaymentFacts, policy: RoutingPolicy, **_: Any
) -> Ordered:
    present = {c.gateway: c for c in candidates}
    shares = [(g, float(p)) for g, p in policy.split.items() if g in present and float(p) > 0]
    total = sum(p for _, p in shares)
    if not shares:
        return by_score(candidates), ["split: no split gateway is a candidate; by score"]
    point = split_point(facts.payment_id) * total
    chosen = shares[-1][0]
    cumulative = 0.0
    for gateway, share in shares:
        cumulative += share
        if point < cumulative:
            chosen = gateway
            break
    rest = by_score(c for c in candidates if c.gateway != chosen)
    note = f"split: point {point:.2f} of {total:g} -> {chosen}"
    return [present[chosen], *rest], [note]


def rule_matches(condition: Mapping[str, Any], facts: PaymentFacts) -> bool:
    """Whether every condition holds (an unknown condition never holds)."""
    for key, expected in condition.items():
        if key == "amount_gte":
            ok = facts.amount >= int(expected)
        elif key == "amount_lt":
            ok = facts.amount < int(expected)
        elif key in ("currency", "method", "country"):
            allowed = expected if isinstance(expected, list | tuple) else [expected]
            ok = str(getattr(facts, key) or "").upper() in {str(a).upper() for a in allowed}
        elif key == "metadata":
            ok = isinstance(expected, Mapping) and all(
                k in facts.metadata and str(facts.metadata[k]) == str(v)
                for k, v in expected.items()
            )
        else:
            ok = False
        if not ok:
            return False
    return True


def order_rules(
    candidates: Sequence[Candidate], *, facts: PaymentFacts, policy: RoutingPolicy, **_: Any
) -> Ordered:
    present = {c.gateway: c for c in candidates}
    pinned: list[Candidate] = []
    notes: list[str] = []
    for index, rule in enumerate(policy.rules):
        gateway = rule.get("gateway")
        if not rule_matches(rule.get("if") or {}, facts):
            continue
        if gateway in present and present[gateway] not in pinned:
            pinned.append(present[gateway])
            notes.append(f"rules: rule {index} matched -> {gateway}")
        else:
            notes.append(f"rules: rule {index} matched but {gateway} is not a candidate")
    rest = by_score(c for c in candidates if c not in pinned)
    if not notes:
        notes.append("rules: no rule matched; by score")
    return [*pinned, *rest], notes


def order_success_rate(
    candidates: Sequence[Candidate],
    *,
    segment: str,
    rng: random.Random | None = None,
    **_: Any,
) -> Ordered:
    rng = rng or _rng
    counts = read_counts([c.gateway for c in candidates], segment=segment)
    cap = isetting("ROUTING_SEGMENT_PRIOR_WEIGHT")
    drawn = []
    for c in candidates:
        approved, declined = float(c.inputs["approved"]), float(c.inputs["declined"])
        rate = (approved + 1) / (approved + declined + 2)
        weight = min(approved + declined, cap)
        seg = counts[c.gateway]
        alpha = 1 + seg.approved + weight * rate
        beta = 1 + seg.declined + weight * (1 - rate)
        sample = rng.betavariate(alpha, beta)
        inputs = {
            **c.inputs,
            "score": c.score,
            "segment_approved": seg.approved,
            "segment_declined": seg.declined,
            "alpha": alpha,
            "beta": beta,
            "sample": sample,
        }
        drawn.append(replace(c, score=sample, inputs=inputs))
    return sorted(drawn, key=lambda c: -c.score), [f"success_rate: segment {segment}"]


ORDERS: dict[str, Callable[..., Ordered]] = {
    "score": order_score,
    "priority": order_priority,
    "split": order_split,
    "rules": order_rules,
    "success_rate": order_success_rate,
}
