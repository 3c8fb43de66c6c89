"""The Redis lock per payment that keeps two workers off one payment's gateway."""

from __future__ import annotations

import threading
import time
import uuid

from django.test import override_settings
from django_redis import get_redis_connection

from payments.locks import PaymentBusy, payment_gateway_lock


def test_a_second_holder_is_refused_while_the_first_holds_it() -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    inside = threading.Event()
    leave = threading.Event()
    outcome: list[str] = []

    def first() -> None:
        with payment_gateway_lock(payment_id):
            inside.set()
            leave.wait(10)

    def second() -> None:
        try:
            with payment_gateway_lock(payment_id):
                outcome.append("entered")
        except PaymentBusy:
            outcome.append("busy")

    holder = threading.Thread(target=first)
    holder.start()
    inside.wait(10)
    contender = threading.Thread(target=second)
    contender.start()
    contender.join(10)
    leave.set()
    holder.join(10)
    with payment_gateway_lock(payment_id):
        outcome.append("entered after release")
    assert outcome == ["busy", "entered after release"]


@override_settings(GATEWAY_TIMEOUT_SECONDS=0.2, PAYMENT_LOCK_MARGIN_SECONDS=0.1)
def test_the_lock_expires_and_a_late_owner_cannot_release_the_new_owners_lock() -> None:
    """A worker stuck past the TTL loses the lock; its release leaves the new owner's lock."""
    payment_id = f"pay_{uuid.uuid4().hex}"
    key = f"aegispay:lock:payment:{payment_id}"
    redis = get_redis_connection("default")
    expired = threading.Event()
    late_owner_left = threading.Event()

    def late_owner() -> None:
        with payment_gateway_lock(payment_id):
            time.sleep(0.9)  # the TTL is 3 x 0.2 + 0.1 = 0.7 s
            expired.set()
        late_owner_left.set()

    thread = threading.Thread(target=late_owner)
    thread.start()
    expired.wait(10)
    with payment_gateway_lock(payment_id):
        late_owner_left.wait(10)
        held_after_late_release = redis.get(key) is not None
    thread.join(10)
    assert held_after_late_release
    assert redis.get(key) is None


@override_settings(GATEWAY_TIMEOUT_SECONDS=10, PAYMENT_LOCK_MARGIN_SECONDS=5)
def test_the_lock_outlives_a_lookup_a_send_and_a_lookup() -> None:
    payment_id = f"pay_{uuid.uuid4().hex}"
    redis = get_redis_connection("default")
    with payment_gateway_lock(payment_id) as token:
        ttl_ms = redis.pttl(f"aegispay:lock:payment:{payment_id}")
        stored = redis.get(f"aegispay:lock:payment:{payment_id}")
    assert 30_000 < ttl_ms <= 35_000
    assert stored.decode() == token
