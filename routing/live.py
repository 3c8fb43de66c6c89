"""Live gateway state for staff pages: breaker, bulkhead, success rate and latency, as the
routers see them in Redis, read for many gateways in two round trips."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from gateways.breaker import BreakerState
from gateways.registry import gateway_names
from routing.constraints import BULKHEAD_FULL, live_reasons
from routing.metrics import gateway_stats_many
from routing.models import GatewayConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayLive:
    """One gateway as the routers see it right now.

    ``breaker_state`` is ``closed``, ``open`` or ``half_open`` (an open breaker past its
    cool-down reads as half_open, as the breaker itself computes it); the counts, ``success_rate``
    (approved / (approved + declined)) and the latency percentiles are those of the routing
    metrics' sliding window (``ROUTING_WINDOW_SECONDS``), None without data.
    """

    gateway: str
    breaker_state: str
    bulkhead_full: bool
    approved: int
    declined: int
    errors: int
    success_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    @property
    def samples(self) -> int:
        return self.approved + self.declined + self.errors


@dataclass(frozen=True, slots=True)
class GatewaysLive:
    """The live state of several gateways, or why it could not be read (``error``)."""

    gateways: Mapping[str, GatewayLive] = field(default_factory=dict)
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error


def gateways_live(names: Iterable[str]) -> GatewaysLive:
    """Breaker state, bulkhead, success rate and latency of each gateway in ``names``.

    Two Redis round trips whatever the number of gateways: one pipeline reads every breaker's
    state and bulkhead (read-only: the lazy open -> half_open step is computed, not written),
    one reads every gateway's windowed counts and latency samples. When Redis cannot be
    reached the result says so instead of raising: these reads serve staff pages, which must
    keep working (and show "unavailable") during the very outages staff look at them for.
    """
    gateways = list(dict.fromkeys(names))
    if not gateways:
        return GatewaysLive()
    try:
        reasons = live_reasons(gateways)
        stats = gateway_stats_many(
            gateways, breaker_states={name: state for name, (_r, state) in reasons.items()}
        )
    except RedisError as exc:
        logger.warning("gateway live state unavailable: %s", exc)
        return GatewaysLive(error=f"{type(exc).__name__}: {exc}")
    return GatewaysLive(
        gateways={
            name: GatewayLive(
                gateway=name,
                breaker_state=BreakerState(stats[name].breaker_state).value,
                bulkhead_full=reasons[name][0] == BULKHEAD_FULL,
                approved=stats[name].approved,
                declined=stats[name].declined,
                errors=stats[name].errors,
                success_rate=stats[name].success_rate,
                latency_p50_ms=stats[name].latency_p50_ms,
                latency_p95_ms=stats[name].latency_p95_ms,
            )
            for name in gateways
        }
    )


def gateway_names_known() -> tuple[str, ...]:
    """Every gateway staff should see: configured ones in routing order, then registered
    adapters that have no configuration row (they cannot be routed to, which is worth seeing)."""
    configured = list(
        GatewayConfig.objects.order_by("priority", "name").values_list("name", flat=True)
    )
    return tuple(dict.fromkeys([*configured, *sorted(gateway_names())]))
