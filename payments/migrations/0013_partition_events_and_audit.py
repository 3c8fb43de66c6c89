"""The event table and the audit trail become range-partitioned tables (common/partitions.py).

The event table is split by month of its payment's creation (``payment_id`` is a time-ordered
id), the audit trail by month of its event's time (``created_at``). Rows, constraints and
indexes are carried over; the primary keys gain the partition key, and the audit trail's
unique ``event_id`` becomes unique ``(event_id, created_at)``: an event's audit row always
carries the event's time, so that is still one row per event. The event table's append-only
triggers are taken off the old table and installed on the new one, then copied onto its
partitions (PostgreSQL clones the row-level ones itself).
"""

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models

from common.partitions import Partitioned, convert_to_partitioned, copy_statement_triggers

EVENTS = Partitioned(members=(("payments_paymentevent", "payment_id"),), interval="month", id_prefix="pay")
AUDIT = Partitioned(members=(("payments_paymentauditentry", "created_at"),), interval="month")

APPEND_ONLY = pgtrigger.compiler.Trigger(name='append_only', sql=pgtrigger.compiler.UpsertTriggerSql(func="RAISE EXCEPTION 'pgtrigger: Cannot update or delete rows from % table', TG_TABLE_NAME;", hash='899bbfbff907f735235a7313123b9775d62e0a14', operation='UPDATE OR DELETE', pgid='pgtrigger_append_only_20207', table='payments_paymentevent', when='BEFORE'))
NO_TRUNCATE = pgtrigger.compiler.Trigger(name='no_truncate', sql=pgtrigger.compiler.UpsertTriggerSql(func="RAISE EXCEPTION 'pgtrigger: Cannot truncate the payment event table';", hash='f3d97778bf082a82ea517129c7ae230c2ef65f25', level='STATEMENT', operation='TRUNCATE', pgid='pgtrigger_no_truncate_6e78b', table='payments_paymentevent', when='BEFORE'))


def partition(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for spec in (EVENTS, AUDIT):
            table, key = spec.members[0]
            convert_to_partitioned(cursor, spec, table=table, key=key)


def copy_triggers(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        copy_statement_triggers(cursor, "payments_paymentevent")


class Migration(migrations.Migration):

    dependencies = [
        ("payments", "0012_risk_rules"),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(model_name="paymentevent", name="append_only"),
        pgtrigger.migrations.RemoveTrigger(model_name="paymentevent", name="no_truncate"),
        migrations.RunPython(partition),
        pgtrigger.migrations.AddTrigger(model_name="paymentevent", trigger=APPEND_ONLY),
        pgtrigger.migrations.AddTrigger(model_name="paymentevent", trigger=NO_TRUNCATE),
        migrations.RunPython(copy_triggers),
        # The model says what the database now holds (the constraint keeps its name).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="paymentauditentry",
                    name="event_id",
                    field=models.CharField(max_length=40),
                ),
                migrations.AddConstraint(
                    model_name="paymentauditentry",
                    constraint=models.UniqueConstraint(
                        fields=("event_id", "created_at"),
                        name="payments_paymentauditentry_event_id_key",
                    ),
                ),
            ],
        ),
    ]
