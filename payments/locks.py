"""A Redis lock per payment around every gateway call.

Never a database row lock across a gateway call: the call sits between two short
transactions, and this lock keeps two workers from calling a gateway for the same payment at
once. Its TTL is above the gateway timeout, so a worker killed mid-call frees it by expiry;
redis-py's ``Lock`` releases only with its owner's token, so a slow worker whose lock expired
cannot release the lock a newer owner holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import LockError


class PaymentBusy(Exception):
    """Another worker holds the gateway lock of this payment."""


def lock_ttl_seconds() -> float:
    return settings.GATEWAY_TIMEOUT_SECONDS + settings.PAYMENT_LOCK_MARGIN_SECONDS


@contextmanager
def payment_gateway_lock(payment_id: str) -> Iterator[None]:
    """Hold the payment's gateway lock for the block, or raise ``PaymentBusy`` at once."""
    lock = get_redis_connection("default").lock(
        f"aegispay:lock:payment:{payment_id}", timeout=lock_ttl_seconds(), blocking=False
    )
    if not lock.acquire():
        raise PaymentBusy(payment_id)
    try:
        yield
    finally:
        # LockError: expired and perhaps taken by another worker; not ours to release any more.
        with suppress(LockError):
            lock.release()
