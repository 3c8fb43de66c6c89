"""payments/projections/read_models.py: the daily summary and the audit trail, fed as their
outbox consumer feeds them (outbox/consumers.py: apply the events and mark them applied, in one
transaction)."""

from __future__ import annotations

import importlib
import threading
import time
from datetime import date
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from outbox.consumers import outbox_consumer_drain
from outbox.models import OutboxConsumerMark, OutboxMessage
from outbox.types import OutboxEvent
from payments.eventstore import payment_transition
from payments.models import (
    Merchant,
    MerchantDailySummary,
    Payment,
    PaymentAuditEntry,
    PaymentEvent,
    ReadModelAppliedEvent,
)
from payments.projections.read_models import (
    READ_MODELS_CONSUMER,
    lock_exclusive,
    read_models_apply,
    read_models_rebuild,
)
from payments.services import payment_create
from tests.conftest import make_client
from tests.payments.helpers import payment_in


def outbox_events(rows: list[OutboxMessage]) -> list[OutboxEvent]:
    return [row.as_event() for row in rows]


def apply(rows: list[OutboxMessage]) -> list[OutboxEvent]:
    """What the consumer pass does with these rows: apply their events and mark them applied
    for the read models, in one transaction."""
    events = outbox_events(rows)
    with transaction.atomic():
        read_models_apply(events)
        OutboxConsumerMark.objects.filter(
            consumer=READ_MODELS_CONSUMER, message__in=[row.pk for row in rows]
        ).update(applied_at=timezone.now())
    return events


def pending() -> list[OutboxMessage]:
    """Outbox rows whose events the read models have not applied yet."""
    return list(
        OutboxMessage.objects.filter(
            marks__consumer=READ_MODELS_CONSUMER, marks__applied_at__isnull=True
        ).order_by("id")
    )


def summary() -> dict[tuple[str, date, str, str], tuple[int, ...]]:
    """Stored summary rows that say something (an all-zero row means no row)."""
    rows = MerchantDailySummary.objects.values_list(
        "merchant_id",
        "day",
        "status",
        "currency",
        "payment_count",
        "amount",
        "amount_authorized",
        "amount_captured",
        "amount_refunded",
    )
    return {tuple(r[:4]): tuple(r[4:]) for r in rows if any(r[4:])}


def audit() -> list[tuple[Any, ...]]:
    return list(
        PaymentAuditEntry.objects.order_by("event_id").values_list(
            "event_id",
            "merchant_id",
            "payment_id",
            "sequence",
            "type",
            "from_status",
            "to_status",
            "actor",
            "correlation_id",
            "created_at",
        )
    )


def day_of(payment: Payment) -> date:
    """The UTC day of the payment's payment.initiated event."""
    return PaymentEvent.objects.get(payment=payment, sequence=1).created_at.date()


def eur_payment(merchant: Merchant, amount: int) -> Payment:
    return payment_create(
        merchant=merchant,
        amount=amount,
        currency="EUR",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="api:key_1",
    )


@pytest.mark.django_db
def test_applying_events_builds_the_summary_and_the_audit_trail() -> None:
    merchant = make_client().merchant
    completed = payment_in(merchant, "completed")
    failed = payment_in(merchant, "failed")
    partly = payment_in(merchant, "partially_refunded")
    fresh = eur_payment(merchant, 500)
    apply(pending())
    day = day_of(completed)

    assert summary() == {
        (merchant.id, day, "completed", "USD"): (1, 1000, 1000, 1000, 0),
        (merchant.id, day, "failed", "USD"): (1, 1000, 0, 0, 0),
        (merchant.id, day, "partially_refunded", "USD"): (1, 1000, 1000, 1000, 100),
        (merchant.id, day, "initiated", "EUR"): (1, 500, 0, 0, 0),
    }
    trail = PaymentAuditEntry.objects.filter(payment=completed).order_by("sequence")
    assert [(e.type, e.from_status, e.to_status) for e in trail] == [
        ("payment.initiated", "", "initiated"),
        ("payment.processing", "initiated", "processing"),
        ("payment.authorized", "processing", "authorized"),
        ("payment.captured", "authorized", "captured"),
        ("payment.completed", "captured", "completed"),
    ]
    events = PaymentEvent.objects.filter(payment=completed).order_by("sequence")
    assert [(e.id, e.actor, e.correlation_id, e.created_at) for e in events] == [
        (e.event_id, e.actor, e.correlation_id, e.created_at) for e in trail
    ]
    assert PaymentAuditEntry.objects.filter(payment=fresh).get().actor == "api:key_1"
    assert PaymentAuditEntry.objects.filter(payment=failed).count() == 2
    assert (
        PaymentAuditEntry.objects.filter(merchant=merchant).count() == PaymentEvent.objects.count()
    )
    assert PaymentAuditEntry.objects.filter(payment=partly, sequence=6).get().to_status == (
        "partially_refunded"
    )


@pytest.mark.django_db
def test_a_payment_split_across_batches_sums_like_one_batch() -> None:
    merchant = make_client().merchant
    refunded = payment_in(merchant, "refunded")
    rows = pending()
    for start in range(0, len(rows), 2):  # two events per consumer pass
        apply(rows[start : start + 2])

    assert summary() == {
        (merchant.id, day_of(refunded), "refunded", "USD"): (1, 1000, 1000, 1000, 1000)
    }
    assert len(audit()) == len(rows) == 7


@pytest.mark.django_db
def test_applying_the_same_events_twice_changes_nothing() -> None:
    merchant = make_client().merchant
    payment_in(merchant, "completed")
    payment_in(merchant, "cancelled")
    events = apply(pending())
    before_summary, before_audit = summary(), audit()

    read_models_apply(events)
    read_models_apply(events[2:3])

    assert summary() == before_summary
    assert audit() == before_audit
    assert len(before_audit) == len(events) == 7


@pytest.mark.django_db
def test_only_applied_or_pruned_events_count_and_a_rebuild_equals_the_increments() -> None:
    merchant = make_client().merchant
    other = make_client(name="Other").merchant
    first = payment_in(merchant, "authorized")
    payment_in(merchant, "refunded")
    payment_in(other, "expired")
    eur_payment(other, 700)
    apply(pending())
    # A later event the read models have not applied yet, and events the relay published to
    # the bus that the read models have not applied: the bus plays no part in "applied".
    payment_transition(
        payment_id=first.id,
        transition="capture",
        actor="test",
        changes={"amount_captured": 400},
    )
    late = payment_in(merchant, "failed")
    OutboxMessage.objects.filter(aggregate_id=late.id).update(
        state=OutboxMessage.State.PUBLISHED, published_at=timezone.now()
    )
    # Pruned: rows deleted (with their marks) after every consumer applied them still count.
    OutboxMessage.objects.filter(aggregate_id=first.id, sequence__lte=2).delete()
    incremental_summary, incremental_audit = summary(), audit()

    result = read_models_rebuild(chunk_size=3)

    assert summary() == incremental_summary
    assert audit() == incremental_audit
    assert result.audit_rows == len(incremental_audit) == PaymentEvent.objects.count() - 3
    assert result.summary_rows == len(incremental_summary) == 4
    assert incremental_summary[(merchant.id, day_of(first), "authorized", "USD")] == (
        1,
        1000,
        1000,
        0,
        0,
    )
    assert (merchant.id, day_of(late), "failed", "USD") not in incremental_summary


@pytest.mark.django_db(transaction=True)
def test_two_passes_applying_disjoint_batches_at_once_give_the_right_totals() -> None:
    merchant = make_client().merchant
    payments = [payment_in(merchant, "completed") for _ in range(6)]
    rows = pending()
    batches = [
        [row for row in rows if row.aggregate_id in {p.id for p in payments[:3]}],
        [row for row in rows if row.aggregate_id in {p.id for p in payments[3:]}],
    ]
    applied = threading.Barrier(2)
    waited: list[float] = []
    errors: list[BaseException] = []

    def first_pass() -> None:
        try:
            with transaction.atomic():
                apply(batches[0])
                applied.wait(timeout=10)
                time.sleep(0.5)  # hold the summary rows while the other pass applies
        except BaseException as exc:
            errors.append(exc)
            applied.abort()
        finally:
            connection.close()

    def second_pass() -> None:
        try:
            applied.wait(timeout=10)
            started = time.monotonic()
            apply(batches[1])
            waited.append(time.monotonic() - started)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first_pass), threading.Thread(target=second_pass)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert waited[0] >= 0.4  # the second pass really waited on the first one's rows
    assert summary() == {
        (merchant.id, day_of(payments[0]), "completed", "USD"): (6, 6000, 6000, 6000, 0)
    }
    assert len(audit()) == len(rows) == 30
    incremental = summary()
    read_models_rebuild()
    assert summary() == incremental


@pytest.mark.django_db(transaction=True)
def test_the_consumer_waits_while_a_repair_holds_the_read_models() -> None:
    merchant = make_client().merchant
    payment_in(merchant, "completed")
    rows = pending()
    locked = threading.Event()

    def repair() -> None:
        try:
            with transaction.atomic():
                lock_exclusive()
                locked.set()
                time.sleep(0.5)
        finally:
            connection.close()

    thread = threading.Thread(target=repair)
    thread.start()
    assert locked.wait(timeout=10)
    started = time.monotonic()
    apply(rows)
    waited = time.monotonic() - started
    thread.join(timeout=10)

    assert waited >= 0.4
    assert len(audit()) == 5


@pytest.mark.django_db
def test_the_consumer_applies_every_event_once_while_nothing_is_published() -> None:
    merchant = make_client().merchant
    refunded = payment_in(merchant, "refunded")
    cancelled = payment_in(merchant, "cancelled")

    first = outbox_consumer_drain(consumer=READ_MODELS_CONSUMER, batch_size=3)
    again = outbox_consumer_drain(consumer=READ_MODELS_CONSUMER, batch_size=3)

    assert (first.applied, first.failed, again.claimed) == (9, 0, 0)
    assert pending() == []
    assert not OutboxMessage.objects.exclude(state="pending").exists()  # the relay never ran
    assert [row[3] for row in audit() if row[2] == refunded.id] == [1, 2, 3, 4, 5, 6, 7]
    assert summary() == {
        (merchant.id, day_of(refunded), "refunded", "USD"): (1, 1000, 1000, 1000, 1000),
        (merchant.id, day_of(cancelled), "cancelled", "USD"): (1, 1000, 0, 0, 0),
    }


@pytest.mark.django_db
def test_what_the_read_models_applied_is_their_own_record_not_the_outboxs_state() -> None:
    merchant = make_client().merchant
    applied = payment_in(merchant, "authorized")
    apply(pending())
    # An event the read models were never handed, whose outbox row went away with its marks
    # (as a prune, a manual cleanup or a restore of the outbox alone would leave it), and one
    # whose mark says "applied" although the read models never saw it.
    unseen = payment_in(merchant, "failed")
    OutboxMessage.objects.filter(aggregate_id=unseen.id).delete()
    marked = eur_payment(merchant, 300)
    OutboxConsumerMark.objects.filter(consumer=READ_MODELS_CONSUMER, aggregate_id=marked.id).update(
        applied_at=timezone.now()
    )
    incremental_summary, incremental_audit = summary(), audit()

    result = read_models_rebuild()

    assert (
        summary()
        == incremental_summary
        == {(merchant.id, day_of(applied), "authorized", "USD"): (1, 1000, 1000, 0, 0)}
    )
    assert audit() == incremental_audit
    assert result.audit_rows == ReadModelAppliedEvent.objects.count() == 3
    assert set(ReadModelAppliedEvent.objects.values_list("event_id", flat=True)) == set(
        PaymentEvent.objects.filter(payment=applied).values_list("id", flat=True)
    )


@pytest.mark.django_db
def test_the_migration_records_as_applied_what_the_consumer_marks_said_was() -> None:
    fill_sql = importlib.import_module("payments.migrations.0007_read_model_applied_events")
    merchant = make_client().merchant
    done = payment_in(merchant, "completed")
    apply(pending())
    pruned = payment_in(merchant, "failed")
    apply(pending())
    OutboxMessage.objects.filter(aggregate_id=pruned.id).delete()  # applied, then pruned
    waiting = payment_in(merchant, "authorized")  # never applied: unapplied marks
    ReadModelAppliedEvent.objects.all().delete()

    with connection.cursor() as cursor:
        cursor.execute(fill_sql.FILL_SQL)

    recorded = set(ReadModelAppliedEvent.objects.values_list("event_id", flat=True))
    assert recorded == set(
        PaymentEvent.objects.filter(payment__in=[done, pruned]).values_list("id", flat=True)
    )
    assert not recorded & set(
        PaymentEvent.objects.filter(payment=waiting).values_list("id", flat=True)
    )
