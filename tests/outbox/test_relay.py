"""The outbox relay against the real PostgreSQL and the real broker (Redis; RabbitMQ when an
AMQP URL is given): every event published, once per pass, in per-payment order, by relays
racing on separate connections; a broker outage delays and loses nothing; dead letters and
requeue. Pruning is tests/outbox/test_prune.py."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_redis import get_redis_connection
from kombu import Queue

from outbox.bus import EventBus, bus_connection, event_exchange, is_amqp
from outbox.models import OutboxMessage
from outbox.relay import (
    OUTAGE_KEY,
    OUTAGES_KEY,
    backoff_seconds,
    outbox_messages_requeue,
    outbox_relay_drain,
    outbox_relay_pass,
    outbox_relay_run,
)
from payments.merchants import merchant_create
from payments.models import Merchant, PaymentEvent
from tests.outbox.conftest import CuttableProxy, Listener
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db(transaction=True)


def merchant() -> Merchant:
    return merchant_create(name="Relay shop")[0]


def in_payment_order(bodies: list[dict[str, Any]]) -> dict[str, list[int]]:
    sequences: dict[str, list[int]] = defaultdict(list)
    for body in bodies:
        sequences[body["payment"]].append(body["sequence"])
    return sequences


def pending() -> int:
    return OutboxMessage.objects.filter(state=OutboxMessage.State.PENDING).count()


def test_a_pass_publishes_every_pending_event_and_marks_it(listener: Listener) -> None:
    shop = merchant()
    payments = [payment_in(shop, "completed") for _ in range(3)]

    published = outbox_relay_drain(batch_size=4).published

    bodies = listener.drain(expect=15)
    assert published == 15
    assert pending() == 0
    assert sorted(b["id"] for b in bodies) == sorted(
        PaymentEvent.objects.values_list("id", flat=True)
    )
    assert in_payment_order(bodies) == {p.id: [1, 2, 3, 4, 5] for p in payments}
    assert {b["type"] for b in bodies} >= {"payment.initiated", "payment.completed"}
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_messages_are_persistent_and_carry_the_event_id(listener: Listener) -> None:
    payment = payment_in(merchant(), "initiated")

    outbox_relay_drain()

    listener.drain(expect=1)
    _body, properties = listener.received[0]
    event = PaymentEvent.objects.get(payment=payment)
    assert properties["message_id"] == event.id
    assert properties["delivery_mode"] == 2
    assert properties["content_type"] == "application/json"
    assert properties["headers"]["event_id"] == event.id
    assert properties["headers"]["sequence"] == 1


def test_a_message_larger_than_one_frame_arrives_whole(listener: Listener) -> None:
    payment = payment_in(merchant(), "initiated")
    row = OutboxMessage.objects.get(aggregate_id=payment.id)
    large = {**row.payload, "note": "x" * 300_000}  # above RabbitMQ's frame_max (131,072)
    OutboxMessage.objects.filter(pk=row.pk).update(payload=large)

    assert outbox_relay_drain().published == 1

    assert listener.drain(expect=1) == [large]


def test_a_later_event_waits_while_an_earlier_one_of_its_payment_is_unpublished(
    listener: Listener,
) -> None:
    shop = merchant()
    held, free = payment_in(shop, "processing"), payment_in(shop, "initiated")
    head = OutboxMessage.objects.filter(aggregate_id=held.id, sequence=1)
    head.update(next_attempt_at=timezone.now() + timedelta(hours=1))  # backing off

    assert outbox_relay_drain().published == 1
    assert OutboxMessage.objects.filter(aggregate_id=held.id, state="pending").count() == 2

    head.update(next_attempt_at=timezone.now())
    assert outbox_relay_drain().published == 2
    bodies = listener.drain(expect=3)
    assert in_payment_order(bodies) == {free.id: [1], held.id: [1, 2]}


def test_two_relays_racing_publish_a_thousand_payments_once_each_in_order(
    listener: Listener,
) -> None:
    shop = merchant()
    payments = [payment_in(shop, "authorized") for _ in range(1000)]
    total = OutboxMessage.objects.count()
    counts = [0, 0]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def relay(index: int) -> None:
        try:
            start.wait()
            bus = EventBus()
            while True:
                result = outbox_relay_pass(batch_size=50, bus=bus)
                counts[index] += result.published
                if result.claimed == 0 and pending() == 0:
                    break
            bus.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=relay, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    bodies = listener.drain(expect=total, timeout=60)
    assert errors == []
    assert total == 3000
    assert sum(counts) == total
    assert min(counts) > 0  # both relays took part
    ids = [b["id"] for b in bodies]
    assert len(ids) == len(set(ids)) == total
    assert in_payment_order(bodies) == {p.id: [1, 2, 3] for p in payments}


def test_a_broker_outage_delays_publishing_and_loses_nothing(
    bus_url: str, listener: Listener, proxy: CuttableProxy, settings: Any
) -> None:
    settings.EVENT_BUS_URL = proxy.url_for(bus_url)
    settings.EVENT_BUS_PUBLISH_TIMEOUT_SECONDS = 2.0
    shop = merchant()
    payments = [payment_in(shop, "captured") for _ in range(5)]
    bus = EventBus()
    first = outbox_relay_pass(batch_size=7, bus=bus)
    assert (first.published, first.bus_down) == (7, False)

    proxy.cut()
    during = outbox_relay_pass(batch_size=7, bus=bus)

    assert (during.published, during.failed, during.dead, during.bus_down) == (0, 0, 0, True)
    assert pending() == 20 - 7
    # An outage is not the messages' fault: no attempt counted, nothing postponed or dead.
    assert not OutboxMessage.objects.filter(attempts__gt=0).exists()
    assert not OutboxMessage.objects.filter(next_attempt_at__isnull=False).exists()
    assert OutboxMessage.objects.filter(last_error__startswith="event bus unavailable").count() == 1

    proxy.restore()
    assert outbox_relay_drain(batch_size=7, bus=bus).published == 13
    bus.close()

    bodies = listener.drain(expect=20)
    assert pending() == 0
    assert len(bodies) == len({b["id"] for b in bodies}) == 20
    assert in_payment_order(bodies) == {p.id: [1, 2, 3, 4] for p in payments}


def test_relays_back_off_together_while_the_bus_is_down(
    bus_url: str, listener: Listener, proxy: CuttableProxy, settings: Any
) -> None:
    settings.EVENT_BUS_URL = proxy.url_for(bus_url)
    settings.EVENT_BUS_PUBLISH_TIMEOUT_SECONDS = 1.0
    settings.OUTBOX_OUTAGE_MAX_BACKOFF_SECONDS = 30.0
    redis = get_redis_connection("default")
    redis.delete(OUTAGE_KEY, OUTAGES_KEY)
    payment = payment_in(merchant(), "initiated")
    proxy.cut()

    assert outbox_relay_run() == 0
    assert redis.get(OUTAGES_KEY) == b"1"
    assert 0 < redis.pttl(OUTAGE_KEY) <= 30_000
    noted = OutboxMessage.objects.get().last_error
    OutboxMessage.objects.update(last_error="")
    proxy.restore()
    assert outbox_relay_run() == 0  # backing off: not even tried
    assert OutboxMessage.objects.get().last_error == ""

    redis.delete(OUTAGE_KEY)  # the backoff elapsed
    assert outbox_relay_run() == 1
    assert redis.get(OUTAGES_KEY) is None
    assert noted.startswith("event bus unavailable")
    assert listener.drain(expect=1)[0]["payment"] == payment.id


def test_a_message_the_bus_refuses_is_retried_with_backoff_then_dead_lettered_and_requeued(
    listener: Listener, settings: Any
) -> None:
    settings.EVENT_BUS_MAX_MESSAGE_BYTES = 100  # every event is larger
    settings.OUTBOX_MAX_ATTEMPTS = 2
    # Full jitter draws the wait from [0, base]: with the default 1 s base a draw of a few
    # milliseconds had passed by the time the test looked (CI, stop 24). An hour's base makes
    # "still backing off" hold unless the draw falls in the test's first milliseconds.
    settings.OUTBOX_RETRY_BASE_SECONDS = settings.OUTBOX_RETRY_MAX_SECONDS = 3600.0
    shop = merchant()
    refused, other = payment_in(shop, "processing"), payment_in(shop, "initiated")
    OutboxMessage.objects.filter(aggregate_id=other.id).update(state="published")

    before = timezone.now()
    first = outbox_relay_pass()
    assert (first.published, first.failed, first.dead) == (0, 1, 0)
    head = OutboxMessage.objects.get(aggregate_id=refused.id, sequence=1)
    assert head.attempts == 1 and "EVENT_BUS_MAX_MESSAGE_BYTES" in head.last_error
    assert head.next_attempt_at is not None
    assert before <= head.next_attempt_at <= timezone.now() + timedelta(hours=1)
    assert head.next_attempt_at > timezone.now()
    assert outbox_relay_pass().claimed == 0  # backing off, and its follower waits behind it

    OutboxMessage.objects.filter(pk=head.pk).update(next_attempt_at=timezone.now())
    second = outbox_relay_pass()
    head.refresh_from_db()
    assert (second.failed, second.dead) == (1, 1)
    assert (head.state, head.attempts) == (OutboxMessage.State.DEAD, 2)
    assert head.dead_at is not None
    assert outbox_relay_drain().published == 0  # dead rows are not retried on their own

    settings.EVENT_BUS_MAX_MESSAGE_BYTES = 1024 * 1024
    assert outbox_messages_requeue(ids=[head.pk]) == 1
    assert outbox_relay_drain().published == 2
    assert in_payment_order(listener.drain(expect=2)) == {refused.id: [1, 2]}
    head.refresh_from_db()
    assert (head.state, head.attempts) == (OutboxMessage.State.PUBLISHED, 0)


@pytest.mark.parametrize("bus_url", ["amqp"], indirect=True)  # nacks are an AMQP feature
def test_rabbitmq_nacks_are_refusals_of_the_one_message(
    bus_url: str, listener: Listener, settings: Any
) -> None:
    with bus_connection(bus_url) as conn:  # a full queue that makes the broker nack
        full = Queue(
            f"aegispay.test.full.{uuid.uuid4().hex[:8]}",
            exchange=event_exchange(),
            routing_key="payment.processing",
            queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        full(conn.default_channel).declare()
        try:
            payment = payment_in(merchant(), "processing")
            result = outbox_relay_pass()
        finally:
            full(conn.default_channel).delete()

    assert (result.published, result.failed) == (1, 1)
    refused = OutboxMessage.objects.get(aggregate_id=payment.id, sequence=2)
    assert refused.attempts == 1 and "nacked" in refused.last_error


@pytest.mark.parametrize("bus_url", ["amqp"], indirect=True)
def test_rabbitmq_nacks_within_a_wave_refuse_only_their_own_messages(
    bus_url: str, listener: Listener, settings: Any
) -> None:
    shop = merchant()
    # Ids in the order nacked, acked, nacked, acked: one wave of four payments' next events.
    payments = [payment_in(shop, status) for status in ("processing", "initiated") * 2]
    OutboxMessage.objects.filter(
        sequence=1, aggregate_id__in=[payments[0].id, payments[2].id]
    ).update(state="published")
    with bus_connection(bus_url) as conn:  # a full queue that makes the broker nack
        full = Queue(
            f"aegispay.test.full.{uuid.uuid4().hex[:8]}",
            exchange=event_exchange(),
            routing_key="payment.processing",
            queue_arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        full(conn.default_channel).declare()
        try:
            result = outbox_relay_pass()
        finally:
            full(conn.default_channel).delete()

    assert (result.claimed, result.published, result.failed) == (4, 2, 2)
    refused = OutboxMessage.objects.filter(attempts=1, last_error__contains="nacked")
    assert sorted(refused.values_list("aggregate_id", flat=True)) == sorted(
        [payments[0].id, payments[2].id]
    )
    # A nacked message may still sit in the other bound queue: only the acked ones must.
    assert {payments[1].id, payments[3].id} <= {b["payment"] for b in listener.drain(expect=2)}


def test_requeue_leaves_rows_that_are_not_dead_alone(bus_url: str) -> None:
    payment_in(merchant(), "initiated")
    message = OutboxMessage.objects.get()

    assert outbox_messages_requeue(ids=[message.pk]) == 0
    message.refresh_from_db()
    assert message.state == OutboxMessage.State.PENDING


def test_backoff_grows_with_full_jitter_up_to_the_cap(settings: Any) -> None:
    settings.OUTBOX_RETRY_BASE_SECONDS = 1.0
    settings.OUTBOX_RETRY_MAX_SECONDS = 60.0
    samples = {attempts: [backoff_seconds(attempts) for _ in range(400)] for attempts in (1, 4, 12)}

    assert all(0 <= s <= 1 for s in samples[1])
    assert all(0 <= s <= 8 for s in samples[4]) and max(samples[4]) > 4
    assert all(0 <= s <= 60 for s in samples[12]) and max(samples[12]) > 30
    assert len({round(s, 6) for s in samples[12]}) > 300


def test_on_redis_a_wave_is_two_round_trips_whatever_its_size(
    bus_url: str, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Redis bus reads the exchange's bindings once per wave and sends the wave's messages
    in one pipeline; before, each message cost a read of the bindings and a push of its own."""
    if is_amqp(bus_url):
        pytest.skip("the Redis bus's round trips (on AMQP a wave waits for its confirms once)")
    from redis.connection import Connection

    shop = merchant()
    payments = [payment_in(shop, "initiated") for _ in range(20)]
    bus = EventBus()
    bus.publish_wave([])  # connected, the exchange declared: only the wave is counted below
    sent: list[object] = []
    real_send = Connection.send_packed_command

    def send(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(command)
        real_send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", send)
    published = outbox_relay_pass(batch_size=50, bus=bus).published
    monkeypatch.undo()
    bus.close()

    # the bus's own round trips: its reads of the bindings and its pushes (each send is one)
    bus_trips = [c for c in map(repr, sent) if "_kombu.binding" in c or "LPUSH" in c]
    assert published == 20
    assert len(bus_trips) == 2
    bodies = listener.drain(expect=20)
    assert sorted(b["payment"] for b in bodies) == sorted(p.id for p in payments)
