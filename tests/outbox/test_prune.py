"""Outbox retention by dropping day partitions (outbox_prune), on the real PostgreSQL: a day
goes whole once every row in it is published past retention and applied by every consumer,
never earlier; rows that landed in the default partition go by the same rule; a busy outbox
makes it wait for a later run, not block writers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone

from common.partitions import (
    default_name,
    ensure_partitions,
    partition_name,
    partitions_of,
    period_start,
)
from outbox.consumers import outbox_consumers_run
from outbox.models import OutboxConsumerMark, OutboxMessage
from outbox.relay import outbox_prune, outbox_relay_drain
from payments.merchants import merchant_create
from payments.models import Payment, PaymentEvent
from tests.payments.helpers import payment_in

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("partitions_restored"),
]

OUTBOX, MARKS = "outbox_outboxmessage", "outbox_outboxconsumermark"


@pytest.fixture(autouse=True)
def _retention(settings: Any, partitions_restored: None) -> None:
    settings.OUTBOX_RETENTION_HOURS = 7 * 24
    ensure_partitions(since=timezone.now() - timedelta(days=12))


def day(days_ago: float) -> datetime:
    return timezone.now() - timedelta(days=days_ago)


def age(payment: Payment, *, created: datetime, published: datetime | None = None) -> None:
    """Move the payment's outbox rows (and their marks) to ``created``'s day, as if written
    then; published ones as if published at ``published`` (default: ``created``)."""
    with transaction.atomic():
        rows = OutboxMessage.objects.filter(aggregate_id=payment.id)
        ids = list(rows.values_list("pk", flat=True))
        rows.update(created_at=created)
        rows.filter(state=OutboxMessage.State.PUBLISHED).update(published_at=published or created)
        OutboxConsumerMark.objects.filter(message_id__in=ids).update(message_created_at=created)


def names(days_ago: float) -> tuple[str, str]:
    start = period_start("day", day(days_ago))
    return partition_name(MARKS, "day", start), partition_name(OUTBOX, "day", start)


def outbox_of(*payments: Payment) -> set[str]:
    return set(
        OutboxMessage.objects.filter(aggregate_id__in=[p.id for p in payments]).values_list(
            "aggregate_id", flat=True
        )
    )


def test_a_day_goes_whole_once_everything_in_it_is_published_past_retention_and_applied() -> None:
    shop = merchant_create(name="Prune shop")[0]
    done = payment_in(shop, "processing")  # published and applied, 9 days ago: goes
    unapplied = payment_in(shop, "processing")  # published, not applied yet: kept
    outbox_relay_drain()
    outbox_consumers_run()
    pending = payment_in(shop, "processing")  # never published: kept
    recent = payment_in(shop, "processing")  # written 11 days ago, published yesterday: kept
    today = payment_in(shop, "processing")  # today's day has not ended: kept
    outbox_relay_drain(), outbox_consumers_run()
    strays = payment_in(shop, "processing")  # in the default partition, done: deleted
    outbox_relay_drain(), outbox_consumers_run()
    OutboxMessage.objects.filter(aggregate_id=pending.id).update(
        state=OutboxMessage.State.PENDING, published_at=None
    )
    age(done, created=day(9))
    age(unapplied, created=day(8))
    age(pending, created=day(10))
    age(recent, created=day(11), published=day(1))
    age(strays, created=day(400))
    OutboxConsumerMark.objects.filter(message__aggregate_id=unapplied.id).update(applied_at=None)
    assert {r for r in OutboxMessage.objects.values_list("state", flat=True)} == {
        "published",
        "pending",
    }
    events = PaymentEvent.objects.count()

    result = outbox_prune()

    # Empty days past retention go too; days with something left to do stay.
    assert set(names(9)) <= set(result.partitions)
    assert not {*names(8), *names(10), *names(11)} & set(result.partitions)
    assert result.default_rows == 2
    assert not set(names(9)) & set(partitions_of(connection.cursor(), OUTBOX))
    assert outbox_of(done, unapplied, pending, recent, today, strays) == {
        unapplied.id,
        pending.id,
        recent.id,
        today.id,
    }
    assert not OutboxConsumerMark.objects.filter(aggregate_id__in=[done.id, strays.id]).exists()
    assert OutboxConsumerMark.objects.filter(aggregate_id=unapplied.id).exists()
    assert PaymentEvent.objects.count() == events  # events are never pruned

    outbox_consumers_run()  # the day of 8 days ago is now applied
    assert set(outbox_prune().partitions) == set(names(8))
    assert outbox_of(unapplied) == set()
    assert not OutboxConsumerMark.objects.filter(aggregate_id=unapplied.id).exists()


def test_a_busy_outbox_makes_prune_wait_for_a_later_run_not_block_writers(
    settings: Any, own_connection: psycopg.Connection
) -> None:
    settings.PARTITION_LOCK_TIMEOUT_MS = 200
    shop = merchant_create(name="Busy shop")[0]
    done = payment_in(shop, "processing")
    outbox_relay_drain(), outbox_consumers_run()
    age(done, created=day(9))
    result: dict[str, Any] = {}

    def prune_elsewhere() -> None:
        try:
            result["first"] = outbox_prune()
        finally:
            connection.close()

    # Another transaction is writing to the outbox (it holds the table's ROW EXCLUSIVE lock).
    with own_connection.transaction(force_rollback=True):
        own_connection.execute(f"LOCK TABLE {OUTBOX} IN ROW EXCLUSIVE MODE")
        worker = threading.Thread(target=prune_elsewhere)
        worker.start()
        worker.join(timeout=10)

    assert not worker.is_alive()
    assert result["first"].partitions == ()
    assert outbox_of(done) == {done.id}
    assert set(names(9)) <= set(outbox_prune().partitions)
    assert outbox_of(done) == set()
    assert default_name(OUTBOX) in partitions_of(connection.cursor(), OUTBOX)
