"""The outbox row's ``event_id`` loses its ``varchar_pattern_ops`` index (issue 13): it was left
behind when the unique ``event_id`` became unique (event_id, created_at) in 0006, no query
matches the column with ``LIKE``, and every outbox insert wrote an entry into it.

The table is partitioned, and PostgreSQL cannot drop a partitioned index concurrently: a plain
``DROP INDEX``, which holds the table's lock only for as long as the catalogue change takes.
Django's state never held the index, so nothing else changes."""

from django.db import migrations

NAME = "outbox_outboxmessage_event_id_009ba241_like"


class Migration(migrations.Migration):
    dependencies = [
        ("outbox", "0006_partition_outbox"),
    ]

    operations = [
        migrations.RunSQL(
            f"DROP INDEX IF EXISTS {NAME}",
            reverse_sql=(
                f"CREATE INDEX IF NOT EXISTS {NAME} "
                "ON outbox_outboxmessage (event_id varchar_pattern_ops)"
            ),
        ),
    ]
