"""The partitioned tables (common/partitions.py) on the real PostgreSQL: partitions made ahead,
each a period of its table; the event table's append-only triggers on every partition, made
before or after them; a payment's events in one partition; rows no partition was made for kept
in the default one."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common import ids
from common.ids import id_floor
from common.partitions import (
    default_name,
    ensure_partitions,
    next_start,
    partition_name,
    partitions_of,
    period_start,
)
from payments.models import Payment, PaymentEvent
from tests.conftest import make_client
from tests.payments.helpers import payment_in

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("partitions_restored"),
]

EVENTS = "payments_paymentevent"
TABLES = (EVENTS, "payments_paymentauditentry", "outbox_outboxmessage", "outbox_outboxconsumermark")


def made_at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """New ids (``common.ids``) are made as if at ``when``; nothing else's clock moves."""
    fake = types.SimpleNamespace(time_ns=lambda: int(when.timestamp() * 1_000_000_000))
    monkeypatch.setattr(ids, "time", fake)


def partition_of(table: str, **where: str) -> str:
    column, value = next(iter(where.items()))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT tableoid::regclass::text FROM {table} WHERE {column} = %s",  # noqa: S608
            [value],
        )
        return str(cursor.fetchone()[0])


def test_partitions_are_made_ahead_for_every_table_once() -> None:
    now = datetime(2031, 5, 30, 12, tzinfo=UTC)

    made = ensure_partitions(now=now, ahead=2)

    assert set(made) == {
        *(f"{t}_p{m}" for t in TABLES[:2] for m in ("203105", "203106", "203107")),
        *(f"{t}_p{d}" for t in TABLES[2:] for d in ("20310530", "20310531", "20310601")),
    }
    assert ensure_partitions(now=now, ahead=2) == []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s",
            [f"{EVENTS}_p203106"],
        )
        low = id_floor("pay", int(datetime(2031, 6, 1, tzinfo=UTC).timestamp() * 1000))
        high = id_floor("pay", int(datetime(2031, 7, 1, tzinfo=UTC).timestamp() * 1000))
        assert cursor.fetchone()[0] == f"FOR VALUES FROM ('{low}') TO ('{high}')"


def test_partitions_can_be_made_for_some_tables_only() -> None:
    from payments.partitions import EVENTS as EVENT_TABLE

    made = ensure_partitions(now=datetime(2032, 2, 10, tzinfo=UTC), ahead=0, specs=[EVENT_TABLE])

    assert made == [f"{EVENTS}_p203202"]


def test_every_partition_of_the_event_table_refuses_update_delete_and_truncate(
    monkeypatch: pytest.MonkeyPatch, own_connection: psycopg.Connection
) -> None:
    shop = make_client().merchant
    now = timezone.now()
    past = now - timedelta(days=70)
    ensure_partitions(since=past)
    # A month made only now, after the triggers were installed on the table.
    future = now + timedelta(days=200)
    ensure_partitions(now=future, ahead=0)
    payments = {}
    for label, when in (
        ("past", past),
        ("now", now),
        ("future", future),
        ("default", datetime(2001, 1, 1, tzinfo=UTC)),
    ):
        made_at(monkeypatch, when)
        payments[label] = payment_in(shop, "processing")
    monkeypatch.undo()
    where = {label: partition_of(EVENTS, payment_id=p.id) for label, p in payments.items()}
    assert where == {
        "past": partition_name(
            EVENTS, "month", past.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        ),
        "now": partition_name(
            EVENTS, "month", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        ),
        "future": partition_name(
            EVENTS, "month", future.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        ),
        "default": default_name(EVENTS),
    }

    for label, partition in where.items():
        payment_id = payments[label].id
        with pytest.raises(psycopg.errors.RaiseException, match="Cannot update or delete"):
            own_connection.execute(
                f"UPDATE {partition} SET actor = 'mallory' WHERE payment_id = %s",  # noqa: S608
                [payment_id],
            )
        with pytest.raises(psycopg.errors.RaiseException, match="Cannot update or delete"):
            own_connection.execute(f"DELETE FROM {partition} WHERE payment_id = %s", [payment_id])  # noqa: S608
        with pytest.raises(psycopg.errors.RaiseException, match="Cannot truncate"):
            own_connection.execute(f"TRUNCATE {partition}")
    assert PaymentEvent.objects.filter(payment__in=payments.values()).count() == 8
    assert set(PaymentEvent.objects.values_list("actor", flat=True)) == {"test"}


def test_a_payments_events_are_read_from_its_one_partition() -> None:
    payment = payment_in(make_client().merchant, "authorized")
    ensure_partitions(since=timezone.now() - timedelta(days=90))

    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT * FROM payments_paymentevent WHERE payment_id = %s", [payment.id]
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())

    scanned = {name for name in partitions_of(connection.cursor(), EVENTS) if name in plan}
    assert scanned == {partition_of(EVENTS, payment_id=payment.id)}


def test_sequence_stays_unique_per_payment_over_the_partitioned_table() -> None:
    payment = payment_in(make_client().merchant, "processing")
    first = payment.events.get(sequence=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentEvent.objects.create(
            payment=payment, sequence=1, type="payment.initiated", to_status="initiated", actor="x"
        )
    assert list(payment.events.values_list("id", flat=True)) == [
        first.id,
        payment.events.get(sequence=2).id,
    ]


def test_rows_no_partition_was_made_for_stay_in_the_default_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Beat down for a long time: rows of a month without a partition go to the default one
    and are kept; that month's event partition is then not made (PostgreSQL would refuse it),
    the other tables' are."""
    when = datetime(2002, 3, 10, tzinfo=UTC)
    made_at(monkeypatch, when)
    payment = payment_in(make_client().merchant, "processing")
    monkeypatch.undo()

    made = ensure_partitions(since=when, now=when, ahead=0)

    assert f"{EVENTS}_p200203" not in made
    assert "payments_paymentauditentry_p200203" in made
    assert partition_of(EVENTS, payment_id=payment.id) == default_name(EVENTS)
    assert Payment.objects.get(pk=payment.pk).events.count() == 2
    assert "default partition" in caplog.text


def test_beat_keeps_partitions_made_ahead(settings: Any) -> None:
    from aegispay.celery import app
    from aegispay.tasks import partitions_maintain

    settings.PARTITIONS_AHEAD = 5
    entry = settings.CELERY_BEAT_SCHEDULE["partitions-maintain"]
    assert entry["task"] == partitions_maintain.name and entry["task"] in app.tasks

    partitions_maintain.apply().get()

    last = timezone.now()
    for _ in range(5):
        last = next_start("month", period_start("month", last))
    assert partition_name(EVENTS, "month", last) in partitions_of(connection.cursor(), EVENTS)
    assert partitions_maintain.apply().get() == []
