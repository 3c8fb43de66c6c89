"""Choosing gateways for an attempt. This first version keeps the merchant's order; the
routing issue adds constraints, live metrics and strategies behind the same function."""

from __future__ import annotations

from collections.abc import Collection, Sequence
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


def route(*, configured: Sequence[str], exclude: Collection[str] = ()) -> RouteDecision:
    """Order the merchant's ``configured`` gateways, leaving out unknown or ``exclude``d ones."""
    known = set(gateway_names())
    chosen: list[str] = []
    excluded: list[tuple[str, str]] = []
    for name in configured:
        if name not in known:
            excluded.append((name, "unknown_gateway"))
        elif name in exclude:
            excluded.append((name, "already_tried"))
        elif name not in chosen:
            chosen.append(name)
    return RouteDecision(strategy="priority", gateways=tuple(chosen), excluded=tuple(excluded))
