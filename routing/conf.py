"""Routing tunables: every one is a Django setting read at call time, with the default here.

Nothing in ``aegispay/settings.py`` is required; set any of these names there (or in a test's
``settings`` fixture) to change it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import SupportsFloat, SupportsInt, cast

from django.conf import settings

DEFAULTS: dict[str, object] = {
    # Gateway configuration and merchant policies are cached per process this long.
    "ROUTING_CONFIG_CACHE_SECONDS": 5.0,
    # Score weights (normalised by their sum; overridable per merchant in MerchantRouting.weights).
    "ROUTING_WEIGHT_SUCCESS": 0.5,
    "ROUTING_WEIGHT_LATENCY": 0.3,
    "ROUTING_WEIGHT_COST": 0.2,
    # Health (error rate and breaker state) as a fourth term; 0.2 keeps it as strong as cost.
    "ROUTING_WEIGHT_HEALTH": 0.2,
    # Below about this many samples a gateway's metrics are blended towards the priors
    # (a Beta prior worth this many pseudo-observations), so new gateways are not starved.
    "ROUTING_MIN_SAMPLES": 20,
    # UCB exploration bonus: c * sqrt(ln(N + 1) / (n + 1)) added to each candidate's score, so
    # a gateway with few samples is tried now and then instead of being starved.
    "ROUTING_EXPLORATION": 0.2,
    "ROUTING_PRIOR_SUCCESS_RATE": 0.8,
    "ROUTING_PRIOR_LATENCY_MS": 500.0,
    # Health of a half-open gateway relative to a closed one (open is always 0).
    "ROUTING_HALF_OPEN_HEALTH": 0.5,
    # Sliding window of the live metrics, cut into buckets (bounded memory).
    "ROUTING_WINDOW_SECONDS": 900,
    "ROUTING_WINDOW_BUCKETS": 30,
    # Latency samples kept per gateway (capped list) for p50/p95.
    "ROUTING_LATENCY_SAMPLES": 256,
    # Redis key prefix of the live metrics (tests use a unique one each).
    "ROUTING_METRICS_PREFIX": "aegispay:routing:",
    # Amount buckets (minor units) of the success_rate strategy's segments.
    "ROUTING_AMOUNT_BUCKETS": (1_000, 10_000, 100_000),
    # How many pseudo-observations the gateway-wide approval rate is worth as the prior of a
    # segment in the success_rate strategy.
    "ROUTING_SEGMENT_PRIOR_WEIGHT": 10,
}


def setting(name: str) -> object:
    """The value of routing setting ``name`` (its default from ``DEFAULTS`` when unset)."""
    return getattr(settings, name, DEFAULTS[name])


# Settings are untyped: each accessor below says what its settings hold, and converts as before.


def fsetting(name: str) -> float:
    """Routing setting ``name``, a number (or its text), as a float."""
    return float(cast("SupportsFloat | str", setting(name)))


def isetting(name: str) -> int:
    """Routing setting ``name``, a number (or its text), as an int."""
    return int(cast("SupportsInt | str", setting(name)))


def isettings(name: str) -> list[int]:
    """Routing setting ``name``, a sequence of numbers (or their text), as ints."""
    return [int(value) for value in cast("Iterable[SupportsInt | str]", setting(name))]
