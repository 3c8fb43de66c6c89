"""The indexes a payment's writes maintain (issue 13): none that only repeats the leading
column of another, and the lookups by that column still go by an index."""

from __future__ import annotations

import pytest
from django.db import connection

from payments.merchants import merchant_create
from payments.models import PaymentEvent
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db

# The single-column indexes Django gives a foreign key, and their LIKE twins, that migration
# 0015 dropped: each table has a composite index led by the same column.
DROPPED = {
    "payments_payment": {
        "payments_payment_merchant_id_2ca42133",
        "payments_payment_merchant_id_2ca42133_like",
    },
    "payments_paymentattempt": {
        "payments_paymentattempt_payment_id_00f3a0be",
        "payments_paymentattempt_payment_id_00f3a0be_like",
    },
    "payments_paymentevent": {
        "payments_paymentevent_payment_id_1fde19d5",
        "payments_paymentevent_payment_id_1fde19d5_like",
    },
    "payments_paymentauditentry": {
        "payments_paymentauditentry_merchant_id_03fc5b7a",
        "payments_paymentauditentry_merchant_id_03fc5b7a_like",
        "payments_paymentauditentry_payment_id_cea87a27",
        "payments_paymentauditentry_payment_id_cea87a27_like",
        "payments_paymentauditentry_event_id_a03b3807_like",
    },
    "outbox_outboxmessage": {"outbox_outboxmessage_event_id_009ba241_like"},
}


def _indexes(table: str) -> set[str]:
    """The table's indexes; a partitioned table's, on the parent (its partitions' are named
    after them and go with them)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.parametrize("table", sorted(DROPPED))
def test_no_index_repeats_the_leading_column_of_another(table: str) -> None:
    assert _indexes(table) & DROPPED[table] == set()


def _plan(sql: str, params: list[object]) -> str:
    """The plan with sequential scans priced out: which index serves the query, if any."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (COSTS OFF) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_lookups_by_those_columns_still_go_by_an_index() -> None:
    """A merchant's payments, a payment's attempts and its events: each found through a
    composite index on its leading column (the index's condition is on it), not by a scan."""
    merchant = merchant_create(name="Index shop")[0]
    payment = payment_in(merchant, "completed")
    lookups = (
        ("SELECT id FROM payments_payment WHERE merchant_id = %s", merchant.id, "merchant_id"),
        ("SELECT id FROM payments_paymentattempt WHERE payment_id = %s", payment.id, "payment_id"),
        (
            "SELECT id FROM payments_paymentevent WHERE payment_id = %s ORDER BY sequence",
            payment.id,
            "payment_id",
        ),
        (
            "SELECT id FROM payments_paymentauditentry WHERE payment_id = %s ORDER BY sequence",
            payment.id,
            "payment_id",
        ),
        (
            "SELECT id FROM payments_paymentauditentry WHERE merchant_id = %s",
            merchant.id,
            "merchant_id",
        ),
    )
    for sql, value, column in lookups:
        plan = _plan(sql, [value])
        assert "Seq Scan" not in plan, plan
        assert f"Index Cond: (({column})" in plan, plan
    assert PaymentEvent.objects.filter(payment_id=payment.id).count() == 5
