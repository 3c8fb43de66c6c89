"""The webhook models move to the ``webhooks`` app with their tables.

State only: the tables, indexes and constraints stay as they are (``webhooks/models.py`` names
them with ``db_table``), and ``webhooks/migrations/0001_initial.py`` adds the same models to the
``webhooks`` app's state. No SQL runs here, in either direction.
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('outbox', '0004_consumer_marks'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='WebhookAttempt'),
                migrations.DeleteModel(name='WebhookDelivery'),
                migrations.DeleteModel(name='WebhookEndpoint'),
            ],
            database_operations=[],
        ),
    ]
