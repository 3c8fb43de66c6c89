"""Reads of routing configuration, returned as plain values.

Both are cached in the process for ``ROUTING_CONFIG_CACHE_SECONDS`` (default 5): the router
runs on every attempt and the configuration changes rarely. Saving or deleting a row through
the ORM (the admin) clears this process's cache at once; other processes see the change within
the TTL. Set the TTL to 0 to read the database on every decision.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from routing.conf import fsetting
from routing.models import GatewayConfig, MerchantRouting
from routing.types import GatewaySpec, RoutingPolicy

# Merchant policies kept at most (the cache is emptied when it would grow past this).
_MAX_POLICIES = 10_000

_lock = threading.Lock()
_specs: tuple[float, dict[str, GatewaySpec]] | None = None
_policies: dict[str, tuple[float, RoutingPolicy]] = {}


def clear_cache() -> None:
    """Forget the cached configuration of this process."""
    global _specs
    with _lock:
        _specs = None
        _policies.clear()


def _spec(row: GatewayConfig) -> GatewaySpec:
    return GatewaySpec(
        name=row.name,
        adapter=row.adapter,
        enabled=row.enabled,
        currencies=tuple(c.upper() for c in row.currencies or ()),
        methods=tuple(m.lower() for m in row.methods or ()),
        countries=tuple(c.upper() for c in row.countries or ()),
        min_amount=row.min_amount,
        max_amount=row.max_amount,
        fee_fixed=row.fee_fixed,
        fee_bps=row.fee_bps,
        priority=row.priority,
    )


def gateway_specs(names: Iterable[str]) -> dict[str, GatewaySpec]:
    """The configuration of each named gateway that has one."""
    global _specs
    ttl = fsetting("ROUTING_CONFIG_CACHE_SECONDS")
    now = time.monotonic()
    cached = _specs
    if cached is None or ttl <= 0 or cached[0] <= now:
        every = {row.name: _spec(row) for row in GatewayConfig.objects.all()}
        cached = (now + ttl, every)
        with _lock:
            _specs = cached
    return {name: cached[1][name] for name in names if name in cached[1]}


def merchant_policy(merchant_id: str) -> RoutingPolicy:
    """The merchant's routing policy; the default (``score``) when none is stored."""
    ttl = fsetting("ROUTING_CONFIG_CACHE_SECONDS")
    now = time.monotonic()
    cached = _policies.get(merchant_id)
    if cached is not None and ttl > 0 and cached[0] > now:
        return cached[1]
    row = MerchantRouting.objects.filter(merchant_id=merchant_id).first()
    policy = (
        RoutingPolicy()
        if row is None
        else RoutingPolicy(
            strategy=row.strategy,
            weights={k: float(v) for k, v in (row.weights or {}).items()},
            split={k: float(v) for k, v in (row.split or {}).items()},
            rules=tuple(row.rules or ()),
        )
    )
    with _lock:
        if len(_policies) >= _MAX_POLICIES:
            _policies.clear()
        _policies[merchant_id] = (now + ttl, policy)
    return policy
