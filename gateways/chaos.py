"""Fault injection for the sandbox gateway: errors, timeouts and added latency, on purpose.

A :class:`ChaosConfig` per gateway account lives in Redis (``aegispay:chaos:{<gateway>}``, JSON;
the gateway's hash tag, as its breaker's and bulkhead's keys, so that one script can read them
together on a Redis Cluster too),
so a test or a benchmark can switch faults on and off for worker processes that are already
running. The sandbox reads it on every call (see ``gateways/sandbox/``): on the inline path
``call_gateway`` reads it in the round trip that admits the call (``chaos_read``), so the read
costs no round trip of its own (issue 13).

Which call meets a fault is decided by :func:`decide`: a hash of (seed, gateway, operation,
reference), not a random draw, so a run can be replayed exactly with the same seed. The sandbox
applies a fault only to the *first* call it sees with a reference (its request log tells), which
matches how AegisPay retries:

* a retry of ``authorize`` after an error uses a *new* reference, so it draws again;
* a resend of the *same* reference after a timeout, and a lookup, must reach the charge that
  was taken, so they are never faulted.

Faults apply to calls the sandbox would otherwise approve; the test tokens keep their own
behaviour.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from django_redis import get_redis_connection

KEY_PREFIX = "aegispay:chaos:"


class Fault(StrEnum):
    """What the sandbox does to one call."""

    NONE = "none"
    # Nothing is taken; the call answers RETRYABLE_ERROR ``gateway_error``.
    ERROR = "error"
    # The operation is taken, but the answer is lost: UNKNOWN ``gateway_timeout``.
    TIMEOUT = "timeout"
    # The issuer declines (authorize only): DECLINED ``card_declined``, nothing taken. Lets a
    # simulation give gateways different approval rates.
    DECLINE = "decline"


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """Faults for one gateway account.

    ``error_rate`` and ``timeout_rate`` are the shares of first calls that fail, and
    ``decline_rate`` the share of first authorize calls the issuer declines (each in [0, 1],
    together at most 1); ``added_latency_ms`` is slept on every call; ``seed`` picks which
    references fail. Raises ``ValueError`` when out of range.
    """

    error_rate: float = 0
    timeout_rate: float = 0
    added_latency_ms: int = 0
    seed: int = 0
    decline_rate: float = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate", "decline_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"{name} must be a number")
            if not (math.isfinite(rate) and 0 <= rate <= 1):
                raise ValueError(f"{name} must be in [0, 1]")
        if self.error_rate + self.timeout_rate + self.decline_rate > 1:
            raise ValueError("error_rate + timeout_rate + decline_rate must be at most 1")
        for name in ("added_latency_ms", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
        if self.added_latency_ms < 0:
            raise ValueError("added_latency_ms must be >= 0")

    def to_json(self) -> str:
        """The config as a JSON object (what is stored in Redis)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ChaosConfig:
        """Parse :meth:`to_json` output; raises ``ValueError`` for invalid content."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a chaos config is a JSON object")
        return cls(**data)


def chaos_key(gateway: str) -> str:
    """The Redis key of ``gateway``'s config (also for a caller that reads it with other
    commands)."""
    return f"{KEY_PREFIX}{{{gateway}}}"


# The configs read for the call running in this context (``chaos_read``), by gateway.
_read: ContextVar[dict[str, Any] | None] = ContextVar("chaos_read", default=None)


@contextmanager
def chaos_read(gateway: str, raw: Any) -> Iterator[None]:
    """Within the block, ``get_chaos(gateway)`` answers from ``raw``, what Redis held under
    ``chaos_key(gateway)`` when the caller read it (``None``: no faults), not from Redis."""
    token = _read.set({gateway: raw})
    try:
        yield
    finally:
        _read.reset(token)


def _redis(redis: Any | None) -> Any:
    return redis if redis is not None else get_redis_connection("default")


def set_chaos(
    gateway: str,
    config: ChaosConfig,
    *,
    ttl_seconds: float | None = None,
    redis: Any | None = None,
) -> None:
    """Switch faults ``config`` on for ``gateway`` in every process, at once.

    With ``ttl_seconds`` the faults switch themselves off after that long (so a crashed
    benchmark cannot leave them on).
    """
    px = max(1, round(ttl_seconds * 1000)) if ttl_seconds is not None else None
    _redis(redis).set(chaos_key(gateway), config.to_json(), px=px)


def get_chaos(gateway: str, *, redis: Any | None = None) -> ChaosConfig | None:
    """The faults switched on for ``gateway``, or None (inside ``chaos_read`` for it, without
    asking Redis again)."""
    read = _read.get()
    if redis is None and read is not None and gateway in read:
        raw = read[gateway]
    else:
        raw = _redis(redis).get(chaos_key(gateway))
    return ChaosConfig.from_json(raw) if raw is not None else None


def clear_chaos(gateway: str | None = None, *, redis: Any | None = None) -> None:
    """Switch faults off for ``gateway``, or for every gateway when it is None."""
    client = _redis(redis)
    if gateway is not None:
        client.delete(chaos_key(gateway))
        return
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=500))
    if keys:
        client.delete(*keys)


def draw(*, seed: int, gateway: str, operation: str, reference: str) -> float:
    """A number in [0, 1) that depends only on its arguments (sha256 of them)."""
    material = f"{seed}\x1f{gateway}\x1f{operation}\x1f{reference}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") / 2**64


def decide(config: ChaosConfig, *, gateway: str, operation: str, reference: str) -> Fault:
    """The fault for one call: the same arguments always give the same fault.

    Over many references, ERROR comes up at ``error_rate``, TIMEOUT at ``timeout_rate`` and
    DECLINE at ``decline_rate``.
    """
    value = draw(seed=config.seed, gateway=gateway, operation=str(operation), reference=reference)
    if value < config.error_rate:
        return Fault.ERROR
    if value < config.error_rate + config.timeout_rate:
        return Fault.TIMEOUT
    if value < config.error_rate + config.timeout_rate + config.decline_rate:
        return Fault.DECLINE
    return Fault.NONE
