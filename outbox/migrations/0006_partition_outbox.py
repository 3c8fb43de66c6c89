"""The outbox and its consumer marks become range-partitioned tables, by UTC day of the outbox
row's ``created_at`` (common/partitions.py), so that rows past retention go by dropping their
day's partitions instead of by DELETE (outbox/relay.py, ``outbox_prune``).

A mark carries its row's ``created_at`` (``message_created_at``) as its own partition key, and
its foreign key to the row becomes ``(message_id, message_created_at)``: a foreign key to a
partitioned table must name the referenced table's whole primary key. The unique constraints
gain the partition key: ``(event_id, created_at)`` and ``(consumer, event_id,
message_created_at)``, still one row per event, which is written only in its event's
transaction.
"""

from django.db import migrations, models
import django.db.models.deletion

from common.partitions import Partitioned, convert_to_partitioned

OUTBOX = Partitioned(
    members=(
        ("outbox_outboxmessage", "created_at"),
        ("outbox_outboxconsumermark", "message_created_at"),
    ),
    interval="day",
)

ADD_KEY = """
ALTER TABLE outbox_outboxconsumermark ADD COLUMN message_created_at timestamp with time zone;
UPDATE outbox_outboxconsumermark c SET message_created_at = m.created_at
FROM outbox_outboxmessage m WHERE m.id = c.message_id;
ALTER TABLE outbox_outboxconsumermark ALTER COLUMN message_created_at SET NOT NULL;
"""

FOREIGN_KEY = """
ALTER TABLE outbox_outboxconsumermark ADD CONSTRAINT outbox_mark_message_fk
FOREIGN KEY (message_id, message_created_at) REFERENCES outbox_outboxmessage (id, created_at)
DEFERRABLE INITIALLY DEFERRED
"""


def partition(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for table, key in OUTBOX.members:
            convert_to_partitioned(cursor, OUTBOX, table=table, key=key)
        cursor.execute(FOREIGN_KEY)


class Migration(migrations.Migration):

    dependencies = [
        ("outbox", "0005_webhooks_move_out"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD_KEY)],
            state_operations=[
                migrations.AddField(
                    model_name="outboxconsumermark",
                    name="message_created_at",
                    field=models.DateTimeField(),
                    preserve_default=False,
                ),
                migrations.AlterField(
                    model_name="outboxconsumermark",
                    name="message",
                    field=models.ForeignKey(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="marks",
                        to="outbox.outboxmessage",
                    ),
                ),
            ],
        ),
        migrations.RunPython(partition),
        # The models say what the database now holds (the constraints keep their names).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="outboxmessage",
                    name="event_id",
                    field=models.CharField(max_length=40),
                ),
                migrations.AddConstraint(
                    model_name="outboxmessage",
                    constraint=models.UniqueConstraint(
                        fields=("event_id", "created_at"),
                        name="outbox_outboxmessage_event_id_key",
                    ),
                ),
                migrations.RemoveConstraint(
                    model_name="outboxconsumermark", name="outbox_consumer_mark_event_uniq"
                ),
                migrations.AddConstraint(
                    model_name="outboxconsumermark",
                    constraint=models.UniqueConstraint(
                        fields=("consumer", "event_id", "message_created_at"),
                        name="outbox_consumer_mark_event_uniq",
                    ),
                ),
            ],
        ),
    ]
