"""Token buckets in Redis: one atomic round trip (a Lua script) per decision.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a request takes
one. The bucket is a hash ``aegispay:ratelimit:<name>`` of its tokens and when they were
counted (Redis server time, so every process agrees), expiring once it would be full again.

Redis being down never refuses a request: ``take`` answers ``None`` and counts it in
``aegispay_rate_limit_unchecked_total``, and the caller lets the request through. The limiter
must never take the API down.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest
from prometheus_client import Counter
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

logger = logging.getLogger(__name__)

KEY_PREFIX = "aegispay:ratelimit:"

UNCHECKED = Counter(
    "aegispay_rate_limit_unchecked_total",
    "Requests let through unchecked because the rate limiter's Redis failed",
    ["scope"],
)

# KEYS: the bucket, and optionally a key to read in the same round trip (``watch``). ARGV: rate
# (tokens per second), burst, cost (1 to take a token, 0 to look). Returns {allowed (0/1), tokens
# left in thousandths, ms until one token is back, the watched key's value or nil}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
if tokens >= 1 then
    allowed = 1
    tokens = tokens - cost
end
if cost > 0 then
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
    redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
end
local wait = 0
if tokens < 1 then
    wait = math.ceil((1 - tokens) / rate * 1000)
end
local watched = false
if #KEYS > 1 then
    watched = redis.call('GET', KEYS[2])
end
return {allowed, math.floor(tokens * 1000), wait, watched}
"""


@dataclass(frozen=True)
class Decision:
    """One bucket's answer, with what the ``RateLimit-*`` headers say."""

    allowed: bool
    limit: int  # the burst: how many requests the bucket holds
    remaining: int  # whole tokens left
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until the next request would be allowed (0: now)
    watched: bytes | None = None  # the value of ``take``'s ``watch`` key (None: not set)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.retry_after))
        return headers


@dataclass(frozen=True)
class Bucket:
    """``rate`` tokens a second, at most ``burst``."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, not {self}")


class RateLimiter:
    def __init__(self, redis: Any = None) -> None:
        self._given = redis

    @cached_property
    def _redis(self) -> Any:
        """A client of its own, with no retries and short timeouts
        (``RATE_LIMIT_REDIS_TIMEOUT_SECONDS``): a Redis that is down or hangs costs a request
        milliseconds, not the seconds redis-py's default retries take (4.3 s when refused)."""
        if self._given is not None:
            return self._given
        timeout = settings.RATE_LIMIT_REDIS_TIMEOUT_SECONDS
        return redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    @cached_property
    def _take(self) -> Any:
        return self._redis.register_script(_TAKE)

    def take(
        self, scope: str, name: str, bucket: Bucket, *, cost: int = 1, watch: str | None = None
    ) -> Decision | None:
        """Take ``cost`` tokens (0: only look) from ``scope:name``; ``None`` if Redis failed.
        ``watch``: a Redis key whose value the decision carries, read in the same round trip."""
        keys = [f"{KEY_PREFIX}{scope}:{name}"] + ([watch] if watch else [])
        try:
            allowed, milli, wait_ms, watched = self._take(
                keys=keys, args=[bucket.rate, bucket.burst, cost]
            )
        except RedisError:
            UNCHECKED.labels(scope).inc()
            logger.warning("rate limiter unavailable: %s let through unchecked", scope)
            return None
        tokens = int(milli) / 1000
        return Decision(
            allowed=bool(allowed),
            limit=bucket.burst,
            remaining=max(0, math.floor(tokens)),
            reset=math.ceil(max(0.0, bucket.burst - tokens) / bucket.rate),
            retry_after=math.ceil(int(wait_ms) / 1000),
            # Lua's false for a key not set: nil in RESP2, a boolean in RESP3.
            watched=watched if isinstance(watched, bytes) else None,
        )

    def read(self, key: str) -> tuple[bool, bytes | None]:
        """``(True, value)`` of one Redis key (``None``: not set), ``(False, None)`` if Redis
        failed: on the limiter's client, as fast to give up as ``take``."""
        try:
            return True, self._redis.get(key)
        except RedisError:
            return False, None

    def incr(self, key: str) -> bool:
        """Add one to a Redis key's integer; ``False`` if Redis failed."""
        try:
            self._redis.incr(key)
        except RedisError:
            return False
        return True


limiter = RateLimiter()


def client_ip(request: HttpRequest) -> str:
    """The client's address: ``REMOTE_ADDR``, or with ``RATE_LIMIT_PROXY_HOPS`` = N trusted
    proxies in front (an ingress, a load balancer), the address the Nth from the right of
    ``X-Forwarded-For`` names (what the outermost trusted proxy saw). Entries further left are
    the client's own words and are never trusted."""
    hops = settings.RATE_LIMIT_PROXY_HOPS
    remote = str(request.META.get("REMOTE_ADDR", ""))
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
    forwarded = [part for part in forwarded if part]
    return forwarded[-hops] if len(forwarded) >= hops else (forwarded[0] if forwarded else remote)
