"""The payment's merchant, the attempt's payment, the event's payment and the audit row's
merchant and payment lose the single-column indexes Django gives a foreign key, with their
``varchar_pattern_ops`` twins (issue 13); so does the audit row's ``event_id``, whose twin was
left behind when its unique index became (event_id, created_at) in 0013.

Each was a second copy of a composite index's leading column: (merchant, created_at) and the
payment list's other merchant indexes; the unique (payment, number) of the attempts; the unique
(payment, sequence) of the events; the audit's (merchant, -created_at), (payment, sequence) and
unique (event_id, created_at). Those serve every lookup by the column and the foreign keys' own
checks, and no query matches these columns with ``LIKE``. A payment's status changes are not
HOT updates (its status is indexed), so every one of them wrote an entry into every index of
the payment: 16 before, 14 now; an event's insert wrote 5 (now 3), an attempt's 7 (now 5), an
audit row's 10 (now 5).

The payment's and the attempt's are dropped CONCURRENTLY, outside a transaction, so that writes
go on meanwhile. The event and audit tables are partitioned, and PostgreSQL cannot drop a
partitioned index concurrently: theirs are dropped with a plain ``DROP INDEX``, which holds the
table's lock only for as long as the catalogue change takes. The foreign keys themselves are
untouched (Django's AlterField would drop and re-validate them).
"""

import django.db.models.deletion
from django.db import migrations, models

# (table, index, indexed columns, concurrently)
INDEXES = (
    ("payments_payment", "payments_payment_merchant_id_2ca42133", "merchant_id", True),
    (
        "payments_payment",
        "payments_payment_merchant_id_2ca42133_like",
        "merchant_id varchar_pattern_ops",
        True,
    ),
    (
        "payments_paymentattempt",
        "payments_paymentattempt_payment_id_00f3a0be",
        "payment_id",
        True,
    ),
    (
        "payments_paymentattempt",
        "payments_paymentattempt_payment_id_00f3a0be_like",
        "payment_id varchar_pattern_ops",
        True,
    ),
    (
        "payments_paymentevent",
        "payments_paymentevent_payment_id_1fde19d5",
        "payment_id",
        False,
    ),
    (
        "payments_paymentevent",
        "payments_paymentevent_payment_id_1fde19d5_like",
        "payment_id varchar_pattern_ops",
        False,
    ),
    (
        "payments_paymentauditentry",
        "payments_paymentauditentry_merchant_id_03fc5b7a",
        "merchant_id",
        False,
    ),
    (
        "payments_paymentauditentry",
        "payments_paymentauditentry_merchant_id_03fc5b7a_like",
        "merchant_id varchar_pattern_ops",
        False,
    ),
    (
        "payments_paymentauditentry",
        "payments_paymentauditentry_payment_id_cea87a27",
        "payment_id",
        False,
    ),
    (
        "payments_paymentauditentry",
        "payments_paymentauditentry_payment_id_cea87a27_like",
        "payment_id varchar_pattern_ops",
        False,
    ),
    (
        "payments_paymentauditentry",
        "payments_paymentauditentry_event_id_a03b3807_like",
        "event_id varchar_pattern_ops",
        False,
    ),
)


def _drop(table: str, name: str, columns: str, concurrently: bool) -> migrations.RunSQL:
    how = "CONCURRENTLY " if concurrently else ""
    # A partitioned table's index is made ON ONLY the parent, then attached per partition, as
    # Django made it; CREATE INDEX on the parent does both.
    return migrations.RunSQL(
        f"DROP INDEX {how}IF EXISTS {name}",
        reverse_sql=f"CREATE INDEX {how}IF NOT EXISTS {name} ON {table} ({columns})",
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0014_idempotency_key_merchant_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="payment",
                    name="merchant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="payments",
                        to="payments.merchant",
                    ),
                ),
                migrations.AlterField(
                    model_name="paymentattempt",
                    name="payment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="attempts",
                        to="payments.payment",
                    ),
                ),
                migrations.AlterField(
                    model_name="paymentauditentry",
                    name="merchant",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="payments.merchant",
                    ),
                ),
                migrations.AlterField(
                    model_name="paymentauditentry",
                    name="payment",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="audit_entries",
                        to="payments.payment",
                    ),
                ),
                migrations.AlterField(
                    model_name="paymentevent",
                    name="payment",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="events",
                        to="payments.payment",
                    ),
                ),
            ],
            database_operations=[_drop(*index) for index in INDEXES],
        ),
    ]
