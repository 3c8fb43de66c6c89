"""A bulkhead per gateway account: at most ``limit`` concurrent calls across every process.

It is a distributed semaphore in Redis: one sorted set ``aegispay:bulkhead:{name}`` whose
members are lease tokens scored by their expiry (Redis server time, in ms). Acquiring is one
Lua script (drop expired leases, count, add) so two processes can never both take the last
slot. A worker that dies holding a slot cannot leak it: its lease expires after
``lease_seconds`` and the next acquire reclaims it. The lease must outlast the call it guards,
hence the default of the gateway timeout plus a margin.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection

from gateways.base import GatewayError

KEY_PREFIX = "aegispay:bulkhead:"

# acquire(key, limit, lease_ms, token): 1 when the lease was taken. A Lua function, so that a
# script of another module can take a slot in its own round trip (gateways/resilience.py).
ACQUIRE_FUNCTION = """
local function acquire(key, limit, lease_ms, token)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= limit then
        return 0
    end
    redis.call('ZADD', key, now + lease_ms, token)
    -- The key outlives its longest lease, whatever lease other callers asked for.
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', key, string.format('%d', tonumber(last[2]) + 1000))
    return 1
end
"""

# KEYS: leases. ARGV: limit, lease ms, token. Returns 1 when the lease was taken.
_ACQUIRE = (
    ACQUIRE_FUNCTION + "return acquire(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])\n"
)

# KEYS: leases. Returns the number of leases not yet expired.
_IN_USE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')
"""


class BulkheadFull(GatewayError):
    """Every slot of the bulkhead is taken: the call was not made."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"bulkhead {name!r} is full ({limit} concurrent calls)")
        self.name = name
        self.limit = limit


class Bulkhead:
    """At most ``limit`` leases of ``name`` held at once, by every process together.

    Every instance with the same name, in any process, shares the same slots. Raises
    ``ValueError`` for a limit below 1 or a lease that is not positive; Redis errors propagate.
    """

    def __init__(
        self, name: str, *, limit: int, lease_seconds: float, redis: Any | None = None
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.name = name
        self.limit = int(limit)
        self.lease_seconds = float(lease_seconds)
        self._redis = redis if redis is not None else get_redis_connection("default")
        self.key = f"{KEY_PREFIX}{{{name}}}"

    # Registered on first use (see CircuitBreaker): reading the key and limit needs neither.
    @cached_property
    def _acquire(self) -> Any:
        return self._redis.register_script(_ACQUIRE)

    @cached_property
    def _in_use(self) -> Any:
        return self._redis.register_script(_IN_USE)

    def __repr__(self) -> str:
        return f"Bulkhead(name={self.name!r}, limit={self.limit})"

    def acquire(self) -> str | None:
        """Take a slot: a lease token, valid for ``lease_seconds``, or None when all are taken.

        Expired leases (of workers that died holding them) are reclaimed first.
        """
        token, args = self.acquire_arguments()
        taken = self._acquire(keys=[self.key], args=args)
        return token if taken else None

    def acquire_arguments(self) -> tuple[str, list[int | str]]:
        """A new lease token, and ``ACQUIRE_FUNCTION``'s arguments after the key to take it:
        the limit, the lease in ms and the token."""
        token = uuid.uuid4().hex
        return token, [self.limit, max(1, round(self.lease_seconds * 1000)), token]

    def release(self, token: str) -> bool:
        """Give back the slot of ``token``; True when it was still held (False when it had
        expired or was released already). Never frees another holder's slot."""
        return bool(self._redis.zrem(self.key, token))

    def in_use(self) -> int:
        """How many slots are held by leases that have not expired."""
        return int(self._in_use(keys=[self.key]))

    def reset(self) -> None:
        """Drop every lease (for tests and operations)."""
        self._redis.delete(self.key)

    @contextmanager
    def slot(self) -> Iterator[str]:
        """Hold a slot for the ``with`` block and release it after, whatever happens.

        Raises ``BulkheadFull`` (nothing acquired) when every slot is taken.
        """
        token = self.acquire()
        if token is None:
            raise BulkheadFull(self.name, self.limit)
        try:
            yield token
        finally:
            self.release(token)


def bulkhead_for(gateway: str) -> Bulkhead:
    """The bulkhead of gateway account ``gateway``, configured from settings.

    Settings (defaults): ``BULKHEAD_LIMIT`` (20 concurrent calls per gateway),
    ``BULKHEAD_LEASE_SECONDS`` (``GATEWAY_TIMEOUT_SECONDS`` + 5).
    """
    timeout = float(getattr(settings, "GATEWAY_TIMEOUT_SECONDS", 10.0))
    return Bulkhead(
        gateway,
        limit=int(getattr(settings, "BULKHEAD_LIMIT", 20)),
        lease_seconds=float(getattr(settings, "BULKHEAD_LEASE_SECONDS", timeout + 5)),
    )
