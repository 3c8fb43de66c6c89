"""The two staff roles of the back office, as Django groups.

* ``viewers`` read: the view permission of every model of the back office's apps.
* ``operators`` read the same and act: the payment actions of ``payments.Payment``
  (retry, refund, capture, cancel), requeueing outbox messages and resending webhook
  deliveries (their admin actions need the model's ``change`` permission), and editing the
  routing configuration (gateway configs, merchant routing).

Staff never edit payments, events, attempts or refunds: no group gets their add, change or
delete permission, and their admins refuse those anyway.

``create`` is idempotent and is also what tests call after a transactional test emptied the
tables (see tests/payments/test_admin.py).
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

APPS = ("payments", "outbox", "routing", "gateways")
# The webhook models have since moved from outbox to webhooks with their content types, so with
# their permissions and these grants (webhooks/migrations/0002). ``create`` also runs with
# today's apps (the tests), where they are found under webhooks.
LATER_APPS = ("webhooks",)


def _labels(apps):
    present = {app_config.label for app_config in apps.get_app_configs()}
    return [label for label in APPS + LATER_APPS if label in present]

OPERATOR_PERMISSIONS = (
    ("payments", "retry_payment"),
    ("payments", "refund_payment"),
    ("payments", "capture_payment"),
    ("payments", "cancel_payment"),
    ("outbox", "change_outboxmessage"),
    ("outbox", "change_webhookdelivery"),
    ("routing", "change_gatewayconfig"),
    ("routing", "change_merchantrouting"),
)


def _ensure_permissions(apps):
    """Permissions are normally made after ``migrate`` ends (post_migrate); the groups need
    them now, so make them here (a no-op for those that exist)."""
    for label in _labels(apps):
        app_config = apps.get_app_config(label)
        models_module = getattr(app_config, "models_module", None)
        # Historical app configs have no models module, and create_permissions skips those.
        app_config.models_module = models_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = models_module


def create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    _ensure_permissions(apps)
    labels = _labels(apps)
    view = Permission.objects.filter(content_type__app_label__in=labels, codename__startswith="view_")
    viewers, _ = Group.objects.get_or_create(name="viewers")
    viewers.permissions.add(*view)
    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.add(*view)
    for app_label, codename in OPERATOR_PERMISSIONS:
        operators.permissions.add(
            Permission.objects.get(
                content_type__app_label__in=[app_label, *LATER_APPS], codename=codename
            )
        )


def remove(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name__in=("viewers", "operators")).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0004_admin_indexes_and_permissions"),
        ("outbox", "0003_webhooks"),
        ("routing", "0002_default_sandbox_gateways"),
        ("gateways", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    # The grants above name the webhook models under "outbox", where they were when this was
    # written: run it before they leave outbox's state (their content types then move to
    # "webhooks" with their permissions and these grants, webhooks/migrations/0002).
    run_before = [("outbox", "0005_webhooks_move_out")]

    operations = [migrations.RunPython(create, remove)]
