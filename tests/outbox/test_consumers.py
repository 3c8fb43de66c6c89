"""outbox/consumers.py: in-process consumers read the outbox themselves, each event applied once
per consumer, in per-payment order, by passes racing on separate connections; a consumer that
fails holds up only its own aggregate and no other consumer."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from outbox import registry
from outbox.consumers import outbox_consumer_drain, outbox_consumer_pass, outbox_consumers_run
from outbox.models import OutboxConsumerMark, OutboxMessage
from outbox.registry import consumer_names, register_consumer
from outbox.selectors import consumer_unapplied_count
from outbox.types import OutboxEvent
from payments.eventstore import payment_transition
from payments.merchants import merchant_create
from payments.models import Merchant, PaymentAuditEntry, PaymentEvent
from payments.projections.read_models import READ_MODELS_CONSUMER
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db(transaction=True)

RECORDER = "test_recorder"


class Recorder:
    """A consumer that remembers, per committed pass, the events it applied; ``fail_on`` makes
    it raise for a batch holding that aggregate."""

    def __init__(self) -> None:
        self.committed: list[OutboxEvent] = []
        self.fail_on: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, events: list[OutboxEvent]) -> None:
        if self.fail_on & {event.aggregate_id for event in events}:
            raise RuntimeError("this consumer cannot take that payment's event")

        def record() -> None:
            with self.lock:
                self.committed.extend(events)

        transaction.on_commit(record)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Registered for this test only (the registry is restored afterwards)."""
    consumer = Recorder()
    monkeypatch.setattr(registry, "_consumers", dict(registry._consumers))
    register_consumer(RECORDER, consumer)
    yield consumer


def shop() -> Merchant:
    return merchant_create(name="Consumer shop")[0]


def test_every_event_gets_one_mark_per_registered_consumer(recorder: Recorder) -> None:
    payment = payment_in(shop(), "authorized")

    marks = OutboxConsumerMark.objects.filter(aggregate_id=payment.id)
    assert consumer_names() == [READ_MODELS_CONSUMER, RECORDER, "webhooks"]
    assert sorted(marks.values_list("consumer", "sequence")) == [
        (name, sequence) for name in consumer_names() for sequence in (1, 2, 3)
    ]
    assert not marks.filter(applied_at__isnull=False).exists()


def test_two_passes_racing_apply_every_event_once_in_payment_order(recorder: Recorder) -> None:
    merchant = shop()
    payments = [payment_in(merchant, "authorized") for _ in range(300)]
    counts = [0, 0]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consume(index: int) -> None:
        try:
            start.wait()
            while True:
                result = outbox_consumer_pass(consumer=RECORDER, batch_size=40)
                counts[index] += result.applied
                if result.claimed == 0 and consumer_unapplied_count(consumer=RECORDER) == 0:
                    break
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    ids = [event.event_id for event in recorder.committed]
    assert len(ids) == len(set(ids)) == PaymentEvent.objects.count() == 900
    assert sum(counts) == 900 and min(counts) > 0  # both passes took part
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in recorder.committed:  # in commit order
        sequences[event.aggregate_id].append(event.sequence)
    assert sequences == {p.id: [1, 2, 3] for p in payments}
    assert not OutboxMessage.objects.exclude(state="pending").exists()  # no relay involved


def test_a_failing_consumer_holds_up_only_its_aggregate_and_no_other_consumer(
    recorder: Recorder,
) -> None:
    merchant = shop()
    stuck, fine = payment_in(merchant, "processing"), payment_in(merchant, "captured")
    recorder.fail_on = {stuck.id}

    applied = outbox_consumers_run()

    assert applied == {READ_MODELS_CONSUMER: 6, RECORDER: 4, "webhooks": 6}
    assert [(e.aggregate_id, e.sequence) for e in recorder.committed] == [
        (fine.id, 1),
        (fine.id, 2),
        (fine.id, 3),
        (fine.id, 4),
    ]
    assert consumer_unapplied_count(consumer=RECORDER) == 2
    assert PaymentAuditEntry.objects.count() == 6  # the read models took everything

    recorder.fail_on = set()
    result = outbox_consumer_drain(consumer=RECORDER)

    assert (result.applied, result.failed) == (2, 0)
    assert [(e.aggregate_id, e.sequence) for e in recorder.committed[4:]] == [
        (stuck.id, 1),
        (stuck.id, 2),
    ]


def test_a_later_event_waits_while_another_pass_holds_an_earlier_one(recorder: Recorder) -> None:
    merchant = shop()
    payment = payment_in(merchant, "initiated")
    holding, release = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow_pass() -> None:
        try:
            with transaction.atomic():
                results.append(outbox_consumer_pass(consumer=RECORDER))
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_pass)
    thread.start()
    assert holding.wait(10)
    payment_in(merchant, "initiated")  # another payment: free to go
    payment_transition(
        payment_id=payment.id,
        transition="start_processing",
        actor="test",
        changes={"gateway": "sandbox_a"},
    )

    during = outbox_consumer_pass(consumer=RECORDER)
    release.set()
    thread.join(10)
    after = outbox_consumer_pass(consumer=RECORDER)

    assert results[0].applied == 1
    assert during.applied == 1  # the other payment's event; not sequence 2 of the held one
    assert after.applied == 1
    held = [e.sequence for e in recorder.committed if e.aggregate_id == payment.id]
    assert held == [1, 2]
