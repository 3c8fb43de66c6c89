"""The plain values routing takes and returns (frozen dataclasses, no ORM objects)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """What the router may know about the payment being routed.

    ``amount`` is in minor units; ``country`` is the customer's ISO 3166 alpha-2 code or empty
    when unknown; ``metadata`` is the merchant's metadata (rules may match on it); ``livemode``
    whether a live key made it.
    """

    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    method: str = "card"
    country: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # A live payment never routes to a sandbox; a test payment only to one.
    livemode: bool = False


@dataclass(frozen=True, slots=True)
class GatewaySpec:
    """A gateway account's routing configuration (a plain copy of ``GatewayConfig``)."""

    name: str
    adapter: str = "sandbox"
    enabled: bool = True
    currencies: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("card",)
    countries: tuple[str, ...] = ()
    min_amount: int | None = None
    max_amount: int | None = None
    fee_fixed: int = 0
    fee_bps: int = 0
    priority: int = 100

    def fee(self, amount: int) -> float:
        """The cost of routing ``amount`` minor units here, in minor units (for scoring only)."""
        return self.fee_fixed + amount * self.fee_bps / 10_000


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """A merchant's routing choice (a plain copy of ``MerchantRouting``)."""

    strategy: str = "score"
    weights: Mapping[str, float] = field(default_factory=dict)
    split: Mapping[str, float] = field(default_factory=dict)
    rules: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A gateway that can take the payment, its score and the inputs of that score."""

    gateway: str
    score: float
    inputs: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "score": round(self.score, 6),
            "inputs": {k: _plain(v) for k, v in self.inputs.items()},
        }


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The gateways to try, best first (the fallback order), and why.

    ``candidates`` are the gateways that passed the constraints with their scores (in the
    order of ``gateways``); ``excluded`` pairs each filtered gateway with its reason code;
    ``notes`` explain strategy-specific choices (the split bucket, the matched rule, ...).
    """

    strategy: str
    gateways: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...] = ()
    candidates: tuple[Candidate, ...] = ()
    segment: str = ""
    after: str | None = None
    notes: tuple[str, ...] = ()
    weights: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (stored on attempts and in events)."""
        return {
            "strategy": self.strategy,
            "gateways": list(self.gateways),
            "excluded": [{"gateway": g, "reason": r} for g, r in self.excluded],
            "candidates": [c.as_dict() for c in self.candidates],
            "segment": self.segment,
            "after": self.after,
            "notes": list(self.notes),
            "weights": {k: _plain(v) for k, v in self.weights.items()},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, int | str | bool) or value is None:
        return value
    return str(value)
