"""What every bench script does first: Django set up on a database of the bench's own,
created when missing and migrated, on the PostgreSQL that DATABASE_URL names."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def setup(database_name: str) -> None:
    """Point Django at ``database_name`` (``BENCH_DATABASE_NAME`` overrides), create it if it
    does not exist, set Django up and migrate. Call before importing any model."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")
    os.environ["DATABASE_NAME"] = os.environ.get("BENCH_DATABASE_NAME", database_name)
    import django

    django.setup()
    _create_database()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _create_database() -> None:
    import psycopg
    from django.conf import settings
    from psycopg import sql

    config = settings.DATABASES["default"]
    with psycopg.connect(
        dbname="postgres",
        user=config["USER"],
        password=config["PASSWORD"] or None,
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        autocommit=True,
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))


def empty_tables() -> None:
    """A clean slate: empty every table a run writes (the bench database is the bench's own).
    The event table refuses TRUNCATE; this connection lifts that for the one statement."""
    import pgtrigger
    from django.db import connection

    # Tables that are not Django models' (pgtrigger, migrations, auth, sessions) are kept.
    tables = [
        model._meta.db_table
        for app in ("payments", "outbox", "gateways")
        for model in _app_models(app)
    ]
    with pgtrigger.ignore("payments.PaymentEvent:no_truncate"), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def _app_models(label: str) -> list:
    from django.apps import apps

    return list(apps.get_app_config(label).get_models())


def unlimited_merchant(name: str, *, merchant_id: str | None = None) -> tuple[Any, str]:
    """A merchant (sandbox gateways) and its raw test API key, whose own request budget is far
    above what any bench sends: the benches measure the servers, not the rate limiter's
    refusals (the limiter still runs on every request).

    ``merchant_id``: that existing merchant (a seeded database's, ``bench/scale.py``) gets a
    new such key instead, so that the bench runs against its payments; ``name`` is unused."""
    from payments.merchants import api_key_create, merchant_create
    from payments.models import Merchant

    if merchant_id is None:
        merchant, api_key = merchant_create(name=name)
        keys = merchant.api_keys.all()
    else:
        merchant = Merchant.objects.get(pk=merchant_id)
        key, api_key = api_key_create(merchant=merchant, name="bench")
        keys = merchant.api_keys.filter(pk=key.pk)
    keys.update(rate_limit_per_second=1_000_000, rate_limit_burst=1_000_000)
    return merchant, api_key


def key_and_payment(name: str, *, merchant_id: str | None = None) -> tuple[str, str]:
    """For the HTTP benches: ``unlimited_merchant``'s raw key and the id of one payment of
    its, the one their ``GET /v1/payments/{id}`` reads again and again."""
    from payments.services import payment_create

    merchant, api_key = unlimited_merchant(name, merchant_id=merchant_id)
    payment = payment_create(
        merchant=merchant,
        amount=1000,
        currency="USD",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="bench",
    )
    return api_key, payment.id
