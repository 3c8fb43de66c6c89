"""Routing configuration of the two default sandbox accounts (any currency, cards only)."""

from django.db import migrations

DEFAULTS = (
    {"name": "sandbox_a", "fee_fixed": 30, "fee_bps": 290, "priority": 1},
    {"name": "sandbox_b", "fee_fixed": 25, "fee_bps": 250, "priority": 2},
)


def create(apps, schema_editor):
    GatewayConfig = apps.get_model("routing", "GatewayConfig")
    for row in DEFAULTS:
        GatewayConfig.objects.get_or_create(
            name=row["name"],
            defaults={
                "adapter": "sandbox",
                "enabled": True,
                "currencies": [],
                "methods": ["card"],
                "countries": [],
                "fee_fixed": row["fee_fixed"],
                "fee_bps": row["fee_bps"],
                "priority": row["priority"],
            },
        )


def remove(apps, schema_editor):
    GatewayConfig = apps.get_model("routing", "GatewayConfig")
    GatewayConfig.objects.filter(name__in=[row["name"] for row in DEFAULTS]).delete()


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial")]

    operations = [migrations.RunPython(create, remove)]
