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
