"""The webhook models' content types move from ``outbox`` to ``webhooks``.

Their permissions (``view_webhookdelivery``, ``change_webhookdelivery``, …) hang off the
content type, and so do the staff groups' grants (payments/migrations/0005_staff_groups.py)
and the admin log's entries: renaming the app label of the existing rows keeps every one of
them, where letting Django create new content types would leave them behind on stale ones.

In a fresh database the content types may not exist yet (they are normally made after
``migrate``): then there is nothing to move, and Django creates them under ``webhooks``.
A row that already exists under ``webhooks`` is left as it is.
"""

from django.db import migrations

MODELS = ("webhookendpoint", "webhookdelivery", "webhookattempt")


def _move(apps, source, target):
    ContentType = apps.get_model("contenttypes", "ContentType")
    taken = set(
        ContentType.objects.filter(app_label=target, model__in=MODELS).values_list(
            "model", flat=True
        )
    )
    ContentType.objects.filter(app_label=source, model__in=set(MODELS) - taken).update(
        app_label=target
    )


def forwards(apps, schema_editor):
    _move(apps, "outbox", "webhooks")


def backwards(apps, schema_editor):
    _move(apps, "webhooks", "outbox")


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
