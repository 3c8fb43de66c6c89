"""Live gateway metrics in Redis, shared by every worker, updated after every attempt.

Per gateway (and per gateway and payment segment, for the ``success_rate`` strategy):

* ``<prefix>{<gateway>}:counts`` hash of time buckets, ``<bucket>:a`` approved, ``<bucket>:d``
  declined, ``<bucket>:e`` errors. The sliding window (``ROUTING_WINDOW_SECONDS``) is cut into
  ``ROUTING_WINDOW_BUCKETS`` buckets, so memory is bounded whatever the volume; stale buckets
  are deleted on every write and skipped on every read.
* ``<prefix>{<gateway>}:latency`` list of the last ``ROUTING_LATENCY_SAMPLES`` latencies (ms),
  capped with LTRIM, from which p50 and p95 are read.
* ``<prefix>{<gateway>}:seg:<segment>`` the same counts per segment.

Each write is one Lua script (atomic, Redis server time, so workers' clocks do not matter);
the keys of one gateway share a hash tag. Reads of several gateways are one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django_redis import get_redis_connection

from gateways.base import GatewayResult, Outcome
from gateways.breaker import BreakerState
from gateways.health import gateways_health
from routing.conf import fsetting, isetting, isettings, setting
from routing.types import PaymentFacts

OUTCOMES = ("approved", "declined", "error")
_FIELD = {"approved": "a", "declined": "d", "error": "e"}

# KEYS: counts, latency, segment counts (or ""). ARGV: field, latency ms (-1: none), window ms,
# buckets, samples cap, ttl ms.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms, buckets = tonumber(ARGV[3]), tonumber(ARGV[4])
local width = math.max(1, math.floor(window_ms / buckets))
local bucket = math.floor(now / width)
local oldest = bucket - buckets + 1
local ttl = tonumber(ARGV[6])
local function bump(key)
    redis.call('HINCRBY', key, string.format('%d', bucket) .. ':' .. ARGV[1], 1)
    local fields = redis.call('HKEYS', key)
    for i = 1, #fields do
        local sep = string.find(fields[i], ':', 1, true)
        if tonumber(string.sub(fields[i], 1, sep - 1)) < oldest then
            redis.call('HDEL', key, fields[i])
        end
    end
    redis.call('PEXPIRE', key, ttl)
end
bump(KEYS[1])
if KEYS[3] ~= '' then
    bump(KEYS[3])
end
local latency = tonumber(ARGV[2])
if latency >= 0 then
    redis.call('LPUSH', KEYS[2], latency)
    redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""

# KEYS: counts. ARGV: window ms, buckets. Returns {approved, declined, errors} in the window.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms, buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local width = math.max(1, math.floor(window_ms / buckets))
local oldest = math.floor(now / width) - buckets + 1
local fields = redis.call('HGETALL', KEYS[1])
local a, d, e = 0, 0, 0
for i = 1, #fields, 2 do
    local field = fields[i]
    local sep = string.find(field, ':', 1, true)
    if tonumber(string.sub(field, 1, sep - 1)) >= oldest then
        local kind, n = string.sub(field, sep + 1), tonumber(fields[i + 1])
        if kind == 'a' then a = a + n elseif kind == 'd' then d = d + n else e = e + n end
    end
end
return {a, d, e}
"""


@dataclass(frozen=True, slots=True)
class Counts:
    """Outcomes in the window."""

    approved: int = 0
    declined: int = 0
    errors: int = 0

    @property
    def samples(self) -> int:
        return self.approved + self.declined + self.errors


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """A gateway's live metrics over the sliding window.

    ``success_rate`` is approved / (approved + declined) and ``error_rate`` errors / samples
    (None without data); latencies are over the last capped samples (None without any).
    ``health`` in [0, 1] is (1 - error rate, blended towards 0 errors below
    ``ROUTING_MIN_SAMPLES``) times the breaker factor: closed 1, half_open
    ``ROUTING_HALF_OPEN_HEALTH``, open 0.
    """

    gateway: str
    approved: int
    declined: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    breaker_state: str
    health: float

    @property
    def samples(self) -> int:
        return self.approved + self.declined + self.errors

    @property
    def success_rate(self) -> float | None:
        decided = self.approved + self.declined
        return self.approved / decided if decided else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.samples if self.samples else None


# p50 and p95 (nearest rank: the ceil(pct/100 * n)-th smallest) of a latency list, computed
# in Redis: a decision then reads two numbers per gateway instead of every sample (parsing a
# few thousand list items per decision was most of the router's time). Returned as strings:
# Redis would turn a Lua number into an integer.
_LATENCY_PERCENTILES = """
local values = redis.call('LRANGE', KEYS[1], 0, -1)
local n = #values
if n == 0 then return {} end
local sorted = {}
for i = 1, n do sorted[i] = tonumber(values[i]) end
table.sort(sorted)
local function rank(pct)
  local r = math.ceil(pct / 100 * n)
  if r < 1 then r = 1 end
  return sorted[r]
end
return {string.format('%.17g', rank(50)), string.format('%.17g', rank(95))}
"""


def _redis() -> Any:
    return get_redis_connection("default")


def _prefix() -> str:
    return str(setting("ROUTING_METRICS_PREFIX"))


def _keys(gateway: str, segment: str | None) -> tuple[str, str, str]:
    base = f"{_prefix()}{{{gateway}}}"
    return f"{base}:counts", f"{base}:latency", f"{base}:seg:{segment}" if segment else ""


def _window_args() -> list[int]:
    return [
        max(1, round(fsetting("ROUTING_WINDOW_SECONDS") * 1000)),
        isetting("ROUTING_WINDOW_BUCKETS"),
    ]


def record_outcome(
    *, gateway: str, outcome: str, latency_ms: int | None, segment: str | None = None
) -> None:
    """Add one attempt's outcome (``approved``, ``declined`` or ``error``) to the metrics of
    ``gateway`` (and of its ``segment`` when given). Atomic; raises ``ValueError`` for an
    unknown outcome; Redis errors propagate."""
    if outcome not in _FIELD:
        raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
    window_ms, buckets = _window_args()
    redis = _redis()
    redis.register_script(_RECORD)(
        keys=list(_keys(gateway, segment)),
        args=[
            _FIELD[outcome],
            -1 if latency_ms is None else max(0, int(latency_ms)),
            window_ms,
            buckets,
            isetting("ROUTING_LATENCY_SAMPLES"),
            2 * window_ms,
        ],
    )


def outcome_of(result: GatewayResult) -> str | None:
    """The metrics outcome of a gateway result, or None when nothing reached the gateway
    (breaker open, bulkhead full, Redis down) or the operation was a lookup's not_found."""
    if result.not_sent:
        return None
    if result.outcome == Outcome.SUCCEEDED:
        return "approved"
    if result.outcome == Outcome.DECLINED:
        return "declined"
    if result.outcome in (Outcome.RETRYABLE_ERROR, Outcome.UNKNOWN):
        return "error"
    return None


def record_result(result: GatewayResult, *, facts: PaymentFacts | None = None) -> bool:
    """Feed an authorize attempt's result into the metrics (and its segment when ``facts``
    are given); False when there was nothing to record (see ``outcome_of``)."""
    outcome = outcome_of(result)
    if outcome is None:
        return False
    record_outcome(
        gateway=result.gateway,
        outcome=outcome,
        latency_ms=result.latency_ms,
        segment=segment_for(facts) if facts is not None else None,
    )
    return True


def segment_for(facts: PaymentFacts) -> str:
    """The payment's segment: ``currency:country:amount bucket`` (``*`` for no country)."""
    bounds = sorted(isettings("ROUTING_AMOUNT_BUCKETS"))
    bucket = next(
        (f"lt{b}" for b in bounds if facts.amount < b), f"ge{bounds[-1]}" if bounds else "any"
    )
    return f"{facts.currency.upper()}:{(facts.country or '*').upper()}:{bucket}"


def read_counts(gateways: Sequence[str], *, segment: str | None = None) -> dict[str, Counts]:
    """Windowed counts of each gateway (of its ``segment`` when given), one round trip."""
    window_ms, buckets = _window_args()
    redis = _redis()
    pipe = redis.pipeline(transaction=False)
    for gateway in gateways:
        counts_key, _latency, segment_key = _keys(gateway, segment)
        pipe.eval(_READ, 1, segment_key or counts_key, window_ms, buckets)
    return {g: Counts(*map(int, row)) for g, row in zip(gateways, pipe.execute(), strict=True)}


def gateway_stats_many(
    gateways: Iterable[str], *, breaker_states: Mapping[str, str] | None = None
) -> dict[str, GatewayStats]:
    """The stats of several gateways in one Redis round trip (plus one for the breakers not
    given in ``breaker_states``)."""
    names = list(dict.fromkeys(gateways))
    window_ms, buckets = _window_args()
    redis = _redis()
    pipe = redis.pipeline(transaction=False)
    for gateway in names:
        counts_key, latency_key, _segment = _keys(gateway, None)
        # EVAL, not a registered Script: a pipeline of Scripts costs a SCRIPT EXISTS round trip
        # per execute; Redis caches the compiled script by its text anyway.
        pipe.eval(_READ, 1, counts_key, window_ms, buckets)
        pipe.eval(_LATENCY_PERCENTILES, 1, latency_key)
    replies = pipe.execute()
    states = dict(breaker_states or {})
    unread = [gateway for gateway in names if not states.get(gateway)]
    states.update({g: str(h.breaker_state) for g, h in gateways_health(unread).items()})
    stats = {}
    for index, gateway in enumerate(names):
        counts = Counts(*map(int, replies[2 * index]))
        percentiles: list[float | None] = [float(x) for x in replies[2 * index + 1]] or [None, None]
        p50, p95 = percentiles
        state = states[gateway]
        stats[gateway] = GatewayStats(
            gateway=gateway,
            approved=counts.approved,
            declined=counts.declined,
            errors=counts.errors,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            breaker_state=state,
            health=_health(counts, state),
        )
    return stats


def gateway_stats(gateway: str) -> GatewayStats:
    """The live metrics of ``gateway`` (see ``GatewayStats``)."""
    return gateway_stats_many([gateway])[gateway]


def reset_metrics(gateway: str) -> None:
    """Forget the metrics of ``gateway`` (all segments too)."""
    redis = _redis()
    base = f"{_prefix()}{{{gateway}}}"
    keys = [*redis.scan_iter(f"{base}:*")]
    if keys:
        redis.delete(*keys)


def _health(counts: Counts, state: str) -> float:
    factor = {
        BreakerState.CLOSED: 1.0,
        BreakerState.HALF_OPEN: fsetting("ROUTING_HALF_OPEN_HEALTH"),
    }.get(BreakerState(state), 0.0)
    error_rate = counts.errors / (counts.samples + isetting("ROUTING_MIN_SAMPLES"))
    return factor * (1.0 - error_rate)
