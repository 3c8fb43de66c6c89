"""The read models record what they applied in a table of their own.

Until now an event counted as applied when the outbox's consumer marks held no unapplied mark
for it (``read_models``). The new table is filled with exactly those events, so nothing that
was applied before is counted differently after.
"""

from django.db import migrations, models

# Every event the read models had applied under the old rule: no unapplied mark of theirs.
FILL_SQL = """
INSERT INTO payments_readmodelappliedevent (event_id, applied_at)
SELECT e.id, now() FROM payments_paymentevent e
WHERE NOT EXISTS (
    SELECT 1 FROM outbox_outboxconsumermark c
    WHERE c.consumer = 'read_models' AND c.event_id = e.id AND c.applied_at IS NULL
)
ON CONFLICT DO NOTHING
"""


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0006_gateway_path_fence"),
        ("outbox", "0004_consumer_marks"),
    ]

    operations = [
        migrations.CreateModel(
            name="ReadModelAppliedEvent",
            fields=[
                ("event_id", models.CharField(max_length=40, primary_key=True, serialize=False)),
                ("applied_at", models.DateTimeField()),
            ],
        ),
        migrations.RunSQL(FILL_SQL, reverse_sql=migrations.RunSQL.noop),
    ]
