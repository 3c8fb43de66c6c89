"""PaymentEvent is append-only in PostgreSQL itself, not only by convention."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from payments.models import PaymentEvent
from payments.services import payment_create
from tests.conftest import make_client


@pytest.fixture
def event(db: None) -> PaymentEvent:
    client = make_client()
    payment = payment_create(
        merchant=client.merchant,
        amount=100,
        currency="EUR",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    return payment.events.get()


def test_raw_sql_update_of_an_event_fails(event: PaymentEvent) -> None:
    with (
        pytest.raises(DatabaseError, match="Cannot update or delete rows"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE payments_paymentevent SET type = 'payment.completed' WHERE id = %s",
            [event.id],
        )
    assert PaymentEvent.objects.get(pk=event.pk).type == "payment.initiated"


def test_raw_sql_delete_of_an_event_fails(event: PaymentEvent) -> None:
    with (
        pytest.raises(DatabaseError, match="Cannot update or delete rows"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM payments_paymentevent WHERE id = %s", [event.id])
    assert PaymentEvent.objects.filter(pk=event.pk).exists()


def test_orm_update_of_an_event_fails(event: PaymentEvent) -> None:
    with pytest.raises(DatabaseError, match="Cannot update or delete rows"), transaction.atomic():
        PaymentEvent.objects.filter(pk=event.pk).update(actor="someone else")
    assert PaymentEvent.objects.get(pk=event.pk).actor == "test"


@pytest.mark.django_db(transaction=True)
def test_truncate_of_the_event_table_fails_on_any_connection(
    own_connection: psycopg.Connection,
) -> None:
    """A fresh connection (not the test's, which may flush) cannot TRUNCATE the events."""
    with pytest.raises(psycopg.errors.RaiseException, match="Cannot truncate"):
        own_connection.execute("TRUNCATE payments_paymentevent CASCADE")


def test_sequence_is_unique_per_payment(event: PaymentEvent) -> None:
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        PaymentEvent.objects.create(
            payment_id=event.payment_id,
            sequence=event.sequence,
            type="payment.processing",
            to_status="processing",
            actor="test",
        )


# --- one statement for the payment, its event and the event's outbox row (issue 13) ---


def _writes(statements: list[dict]) -> list[str]:
    """The statements that write (the tests' ``pgtrigger.ignore`` prefix left off)."""
    sqls = (q["sql"].split(";")[-1].strip() for q in statements)
    return [sql for sql in sqls if sql.startswith(("INSERT", "UPDATE", "WITH"))]


def test_a_transition_writes_the_payment_its_event_and_the_outbox_row_in_one_statement(
    event: PaymentEvent,
) -> None:
    from django.test.utils import CaptureQueriesContext

    from common.isotime import iso
    from outbox.models import OutboxConsumerMark, OutboxMessage
    from payments.eventstore import payment_transition
    from payments.models import Payment

    with CaptureQueriesContext(connection) as statements:
        payment = payment_transition(payment_id=event.payment_id, transition="cancel", actor="test")
    writes = _writes(statements.captured_queries)
    assert len(writes) == 1, [sql[:100] for sql in writes]
    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.version) == ("cancelled", 2)
    assert stored.updated_at == payment.updated_at
    second = PaymentEvent.objects.get(payment=payment, sequence=2)
    assert (second.type, second.from_status, second.to_status) == (
        "payment.cancelled",
        "initiated",
        "cancelled",
    )
    message = OutboxMessage.objects.get(event_id=second.id)
    assert message.payload["id"] == second.id
    assert (message.payload["sequence"], message.payload["to_status"]) == (2, "cancelled")
    assert message.payload["created_at"] == iso(second.created_at)
    assert OutboxConsumerMark.objects.filter(message_id=message.id).count() >= 1


def test_two_transitions_are_one_write_with_an_event_and_an_outbox_row_each(
    event: PaymentEvent,
) -> None:
    """``apply_transitions`` (an automatic capture's captured-then-completed): one statement
    with one UPDATE of the payment, as it is after the last step, and each step's event and
    outbox row with its consumer marks."""
    from django.test.utils import CaptureQueriesContext

    from outbox.models import OutboxConsumerMark, OutboxMessage
    from outbox.registry import consumer_names
    from payments.eventstore import Step, apply_transitions, locked
    from payments.models import Payment

    with CaptureQueriesContext(connection) as statements, locked(event.payment_id) as payment:
        steps = [
            Step("start_processing", {"gateway": "sandbox_a"}),
            Step("fail", {"failure_code": "card_declined"}),
        ]
        apply_transitions(payment, steps, actor="test")
    writes = _writes(statements.captured_queries)
    assert len(writes) == 1, [sql[:100] for sql in writes]
    assert writes[0].count("UPDATE") == 1
    stored = Payment.objects.get(pk=event.payment_id)
    assert (stored.status, stored.version, stored.gateway) == ("failed", 3, "sandbox_a")
    events = list(PaymentEvent.objects.filter(payment=stored, sequence__gt=1).order_by("sequence"))
    assert [(e.sequence, e.type, e.from_status, e.to_status) for e in events] == [
        (2, "payment.processing", "initiated", "processing"),
        (3, "payment.failed", "processing", "failed"),
    ]
    for written in events:
        message = OutboxMessage.objects.get(event_id=written.id)
        assert (message.sequence, message.payload["to_status"]) == (
            written.sequence,
            written.to_status,
        )
        marks = OutboxConsumerMark.objects.filter(message_id=message.id)
        assert sorted(m.consumer for m in marks) == sorted(consumer_names())
        assert {(m.event_id, m.sequence) for m in marks} == {(written.id, written.sequence)}


def test_a_refused_second_transition_writes_nothing(event: PaymentEvent) -> None:
    from outbox.models import OutboxMessage
    from payments.errors import InvalidTransition
    from payments.eventstore import Step, apply_transitions, locked
    from payments.models import Payment

    messages = OutboxMessage.objects.count()
    with pytest.raises(InvalidTransition), locked(event.payment_id) as payment:
        apply_transitions(payment, [Step("cancel"), Step("capture")], actor="test")
    stored = Payment.objects.get(pk=event.payment_id)
    assert (stored.status, stored.version) == ("initiated", 1)
    assert OutboxMessage.objects.count() == messages
    assert PaymentEvent.objects.filter(payment=stored).count() == 1


def test_a_transition_whose_event_conflicts_writes_nothing(event: PaymentEvent) -> None:
    """The event's sequence is taken (a writer that did not hold the lock): the statement fails
    as a whole; the payment's update and the outbox row are not written either."""
    from django.db import IntegrityError

    from outbox.models import OutboxMessage
    from payments.eventstore import apply_transition
    from payments.models import Payment

    payment = Payment.objects.get(pk=event.payment_id)
    PaymentEvent.objects.create(
        payment=payment, sequence=2, type="payment.processing", to_status="processing", actor="x"
    )
    messages = OutboxMessage.objects.count()
    with pytest.raises(IntegrityError), transaction.atomic():
        apply_transition(payment, "cancel", actor="test")
    stored = Payment.objects.get(pk=payment.pk)
    assert (stored.status, stored.version) == ("initiated", 1)
    assert OutboxMessage.objects.count() == messages


def test_a_create_is_five_statements(db: None) -> None:
    """``POST /v1/payments`` with an Idempotency-Key, by an API key this process knows: BEGIN,
    the Idempotency-Key's lock and read, the payment with its event and outbox row, the
    Idempotency-Key's row, COMMIT (8 before the payment, the event and the outbox row were one
    statement and the API key was kept between requests)."""
    from django.test.utils import CaptureQueriesContext

    from outbox.models import OutboxMessage
    from payments.models import Payment
    from tests.conftest import VISA

    client = make_client()
    # The first request of a key reads it, keeps it, and records when it was last used.
    assert client.post("/v1/payments", VISA, format="json").status_code == 201
    with CaptureQueriesContext(connection) as statements:
        response = client.post("/v1/payments", VISA, format="json", HTTP_IDEMPOTENCY_KEY="k-a1-b")
    assert response.status_code == 201
    payment = Payment.objects.get(pk=response.json()["id"])
    assert payment.version == 1
    assert [e.type for e in payment.events.all()] == ["payment.initiated"]
    assert OutboxMessage.objects.filter(aggregate_id=payment.id).count() == 1
    assert len(statements) <= 5, "\n".join(
        q["sql"].split(";")[-1][:120] for q in statements.captured_queries
    )
