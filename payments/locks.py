"""A Redis lock per payment around every gateway call.

Never a database row lock across a gateway call: the call sits between two short
transactions, and this lock keeps two workers from calling a gateway for the same payment at
once. Its TTL outlives the worst case of one run of the gateway-call path (a lookup, the send
and a lookup, each up to the gateway timeout, plus a margin), so a worker killed mid-call
frees it by expiry but a live one never loses it mid-run. redis-py's ``Lock`` releases only
with its owner's token, so a slow worker whose lock expired cannot release the lock a newer
owner holds, and the token is also the fence: the plan step writes it on the operation and the
record step refuses to record unless it is still there (payments/gateway.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import LockError


class PaymentBusy(Exception):
    """Another worker holds the gateway lock of this payment."""


# One run of the path makes at most this many gateway calls: lookup, send, lookup.
CALLS_PER_RUN = 3


def lock_ttl_seconds() -> float:
    return CALLS_PER_RUN * settings.GATEWAY_TIMEOUT_SECONDS + settings.PAYMENT_LOCK_MARGIN_SECONDS


@contextmanager
def payment_gateway_lock(payment_id: str) -> Iterator[str]:
    """Hold the payment's gateway lock for the block and yield its token (the fence), or
    raise ``PaymentBusy`` at once. A Redis error propagates: without the lock nothing may be
    sent."""
    token = secrets.token_hex(16)
    lock = get_redis_connection("default").lock(
        f"aegispay:lock:payment:{payment_id}", timeout=lock_ttl_seconds(), blocking=False
    )
    if not lock.acquire(token=token):
        raise PaymentBusy(payment_id)
    try:
        yield token
    finally:
        # LockError: expired and perhaps taken by another worker; not ours to release any more.
        with suppress(LockError):
            lock.release()
