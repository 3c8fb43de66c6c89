"""Is a gateway usable now: its circuit breaker and its bulkhead, read together.

Everything outside the resilience layer asks here (routing's constraints, the staff pages, the
gateway-call path's fallback check), so only ``breaker.py``, ``bulkhead.py`` and this module
know their Redis layout. The read never writes: an open breaker whose cool-down has passed
reads as ``half_open``, as the breaker computes it, without the transition being stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django_redis import get_redis_connection

from gateways.breaker import BreakerState, breaker_for
from gateways.bulkhead import bulkhead_for

# KEYS: the breaker's state hash, the bulkhead's leases. ARGV: the breaker's open ms.
# Returns {breaker state, leases in use}.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
    state = 'closed'
elseif state == 'open' then
    local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0
    if now >= opened_at + tonumber(ARGV[1]) then
        state = 'half_open'
    end
end
return {state, redis.call('ZCOUNT', KEYS[2], '(' .. string.format('%d', now), '+inf')}
"""


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    """One gateway's breaker state and bulkhead occupancy at the moment of the read."""

    gateway: str
    breaker_state: BreakerState
    in_use: int
    limit: int

    @property
    def breaker_open(self) -> bool:
        return self.breaker_state is BreakerState.OPEN

    @property
    def bulkhead_full(self) -> bool:
        return self.in_use >= self.limit

    @property
    def usable(self) -> bool:
        """A call could go out now. A hint for routing and fallback, not a reservation."""
        return not (self.breaker_open or self.bulkhead_full)


def gateways_health(gateways: Sequence[str]) -> dict[str, GatewayHealth]:
    """The health of each gateway in ``gateways``, in one Redis round trip."""
    names = list(dict.fromkeys(gateways))
    if not names:
        return {}
    pipe = get_redis_connection("default").pipeline(transaction=False)
    limits = {}
    for name in names:
        breaker, bulkhead = breaker_for(name), bulkhead_for(name)
        limits[name] = bulkhead.limit
        open_ms = max(1, round(breaker.open_seconds * 1000))
        # EVAL in the pipeline: a registered Script would add a SCRIPT EXISTS round trip.
        pipe.eval(_READ, 2, breaker.keys[0], bulkhead.key, open_ms)
    health = {}
    for name, (raw_state, in_use) in zip(names, pipe.execute(), strict=True):
        state = raw_state.decode() if isinstance(raw_state, bytes) else raw_state
        health[name] = GatewayHealth(name, BreakerState(state), int(in_use), limits[name])
    return health


def gateway_available(gateway: str) -> bool:
    """Whether a call to ``gateway`` could go out now: its breaker is not open and its bulkhead
    has a free slot. A hint for fallback decisions, not a reservation."""
    return gateways_health([gateway])[gateway].usable
