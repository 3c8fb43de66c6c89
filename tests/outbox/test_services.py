"""Writing outbox rows: the row and its consumer marks in the event's transaction, and one kick
of the relay and the consumers per transaction, however many events it writes."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django_redis import get_redis_connection

from outbox.models import OutboxConsumerMark, OutboxMessage
from outbox.registry import consumer_names
from outbox.services import CONSUMERS_KICK_KEY, KICK_KEY, outbox_messages_create
from outbox.types import OutboxEvent


def _write(number: int) -> None:
    outbox_messages_create(
        [
            OutboxEvent(
                event_id=f"evt_kick{number}",
                event_type="payment.processing",
                aggregate_type="payment",
                aggregate_id="pay_kick",
                sequence=number,
                merchant_id="mer_kick",
                payload={"id": f"evt_kick{number}", "n": number, "text": 'é \\ "'},
            )
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_three_events_in_one_transaction_kick_the_relay_and_consumers_once(
    settings: Any,
) -> None:
    redis = get_redis_connection("default")
    redis.delete(KICK_KEY, CONSUMERS_KICK_KEY, settings.CELERY_OUTBOX_QUEUE)
    with transaction.atomic():
        for number in (1, 2, 3):
            _write(number)
        after_commit = len(connection.run_on_commit)
    queued = redis.llen(settings.CELERY_OUTBOX_QUEUE)
    assert after_commit == 1
    assert queued == 2  # one relay run, one consumers run
    assert (redis.get(KICK_KEY), redis.get(CONSUMERS_KICK_KEY)) == (b"1", b"1")


@pytest.mark.django_db
def test_the_row_and_one_mark_per_consumer_are_written_as_given() -> None:
    with transaction.atomic():
        _write(7)
    row = OutboxMessage.objects.get(event_id="evt_kick7")
    marks = OutboxConsumerMark.objects.filter(message=row).order_by("id")
    assert (row.state, row.attempts, row.sequence, row.aggregate_id) == (
        "pending",
        0,
        7,
        "pay_kick",
    )
    assert row.payload == {"id": "evt_kick7", "n": 7, "text": 'é \\ "'}
    assert [m.consumer for m in marks] == consumer_names()
    assert {(m.event_id, m.aggregate_id, m.sequence, m.applied_at) for m in marks} == {
        ("evt_kick7", "pay_kick", 7, None)
    }


@pytest.mark.django_db(transaction=True)
def test_an_outbox_row_outside_a_transaction_is_refused() -> None:
    with pytest.raises(transaction.TransactionManagementError):
        _write(9)


def _queued(queue: str) -> dict[str, str | None]:
    """Each queued task's name and its ``eta`` (None: to run at once)."""
    import json

    messages = get_redis_connection("default").lrange(queue, 0, -1)
    return {
        json.loads(m)["headers"]["task"].rsplit(".", 1)[1]: json.loads(m)["headers"]["eta"]
        for m in messages
    }


@pytest.fixture
def idle(settings: Any) -> None:
    """No kick queued, no run ended lately."""
    get_redis_connection("default").delete(
        KICK_KEY,
        CONSUMERS_KICK_KEY,
        f"{KICK_KEY}:ran",
        f"{CONSUMERS_KICK_KEY}:ran",
        settings.CELERY_OUTBOX_QUEUE,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("idle")
def test_an_idle_kick_queues_runs_that_start_at_once(settings: Any) -> None:
    with transaction.atomic():
        _write(1)
    assert _queued(settings.CELERY_OUTBOX_QUEUE) == {
        "outbox_relay": None,
        "outbox_consumers": None,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("idle")
def test_a_kick_right_after_a_run_queues_the_next_run_a_delay_later(settings: Any) -> None:
    """Busy: the relay's run just ended, so its next run waits OUTBOX_KICK_DELAY_SECONDS and
    takes everything committed meanwhile; the consumers' did not run, so theirs starts now."""
    from datetime import datetime, timedelta

    from django.utils import timezone

    from outbox.relay import outbox_relay_run

    settings.OUTBOX_KICK_DELAY_SECONDS = 0.5
    outbox_relay_run()
    kicked = timezone.now()
    with transaction.atomic():
        _write(1)
    queued = _queued(settings.CELERY_OUTBOX_QUEUE)
    assert queued["outbox_consumers"] is None
    eta = datetime.fromisoformat(queued["outbox_relay"] or "")
    assert kicked + timedelta(seconds=0.4) <= eta <= timezone.now() + timedelta(seconds=0.5)
    with transaction.atomic():  # committed while the run waits: no second run queued
        _write(2)
    assert get_redis_connection("default").llen(settings.CELERY_OUTBOX_QUEUE) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("idle")
def test_without_a_delay_every_run_starts_at_once(settings: Any) -> None:
    from outbox.consumers import outbox_consumers_run
    from outbox.relay import outbox_relay_run

    settings.OUTBOX_KICK_DELAY_SECONDS = 0
    outbox_relay_run()
    outbox_consumers_run()
    with transaction.atomic():
        _write(1)
    assert _queued(settings.CELERY_OUTBOX_QUEUE) == {
        "outbox_relay": None,
        "outbox_consumers": None,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("idle")
def test_a_relay_run_talks_to_redis_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """One round trip as the run starts (clear the kick, look for a backoff) and one as it ends
    (clear the outage count, note the end for busy kicks): the relay's fixed cost per run."""
    from redis.connection import Connection

    from outbox.relay import OUTAGES_KEY, outbox_relay_run

    sent: list[object] = []
    real_send = Connection.send_packed_command

    def send(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(command)
        real_send(self, command, check_health)

    redis = get_redis_connection("default")
    redis.set(OUTAGES_KEY, "3")
    monkeypatch.setattr(Connection, "send_packed_command", send)
    outbox_relay_run()
    monkeypatch.undo()
    assert len(sent) == 2
    assert redis.exists(OUTAGES_KEY) == 0
    assert redis.pttl(f"{KICK_KEY}:ran") > 0


@pytest.mark.django_db(transaction=True)
def test_deferred_kicks_are_sent_once_as_the_block_ends_even_when_it_raises() -> None:
    """``kicks_deferred``: the kicks of every transaction committed in the block, once, at its
    end; a block inside it gathers for the outer one; a transaction rolled back kicks nothing."""
    from outbox.services import kicks_deferred

    redis = get_redis_connection("default")
    redis.delete(KICK_KEY, CONSUMERS_KICK_KEY)
    with pytest.raises(RuntimeError), kicks_deferred():
        for number in (1, 2):
            with transaction.atomic():
                _write(number)
        with kicks_deferred(), transaction.atomic():
            _write(3)
        assert redis.exists(KICK_KEY, CONSUMERS_KICK_KEY) == 0  # gathered, not sent
        raise RuntimeError("the run failed after its commits")
    assert redis.exists(KICK_KEY, CONSUMERS_KICK_KEY) == 2

    redis.delete(KICK_KEY, CONSUMERS_KICK_KEY)
    with kicks_deferred(), pytest.raises(RuntimeError), transaction.atomic():
        _write(4)
        raise RuntimeError("rolled back")
    assert redis.exists(KICK_KEY, CONSUMERS_KICK_KEY) == 0
