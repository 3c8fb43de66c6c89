"""The Idempotency-Key's merchant loses its own indexes (issue 13): the unique (merchant,
livemode, key) index serves every lookup by merchant, and the planner, on a young table's
statistics, chose the merchant's index for the claim and read every key of the merchant.

Dropped CONCURRENTLY, outside a transaction, so that creates go on during the migration; the
foreign key itself is untouched (Django's AlterField would drop and re-validate it)."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = (
    ("payments_idempotencykey_merchant_id_1ee9066e", "merchant_id"),
    ("payments_idempotencykey_merchant_id_1ee9066e_like", "merchant_id varchar_pattern_ops"),
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payments", "0013_partition_events_and_audit"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="idempotencykey",
                    name="merchant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="payments.merchant",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
                    reverse_sql=(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
                        f"ON payments_idempotencykey ({columns})"
                    ),
                )
                for name, columns in INDEXES
            ],
        ),
    ]
