"""Choosing gateways for an attempt. This version keeps the merchant's order, starting after
the gateway that just failed and leaving out gateways that cannot take a call now; the routing
issue adds constraints, live metrics and strategies behind the same function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateways.registry import gateway_names


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The gateways to try, best first, and why others were left out."""

    strategy: str
    gateways: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "gateways": list(self.gateways),
            "excluded": [{"gateway": g, "reason": r} for g, r in self.excluded],
        }


def route(
    *,
    configured: Sequence[str],
    after: str | None = None,
    available: Callable[[str], bool] | None = None,
) -> RouteDecision:
    """Order the merchant's ``configured`` gateways for the next attempt.

    The order is the merchant's, rotated to start just after ``after`` (the gateway whose
    attempt failed without charging), so a fallback goes to the next gateway and wraps round.
    Unknown gateways, and those ``available`` says cannot take a call now (breaker open,
    bulkhead full), are left out with the reason.
    """
    known = set(gateway_names())
    order = list(dict.fromkeys(configured))
    if after in order:
        start = order.index(after) + 1
        order = order[start:] + order[:start]
    chosen: list[str] = []
    excluded: list[tuple[str, str]] = []
    for name in order:
        if name not in known:
            excluded.append((name, "unknown_gateway"))
        elif available is not None and not available(name):
            excluded.append((name, "unavailable"))
        else:
            chosen.append(name)
    return RouteDecision(strategy="priority", gateways=tuple(chosen), excluded=tuple(excluded))
