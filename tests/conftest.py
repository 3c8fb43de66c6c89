"""Fixtures shared by the whole suite. Tests run against the real PostgreSQL and Redis that
``DATABASE_URL`` and ``REDIS_URL`` name (the embedded ones under ``make test``)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pgtrigger
import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from aegispay.celery import app as celery_app
from gateways.breaker import breaker_for
from gateways.bulkhead import bulkhead_for
from gateways.chaos import clear_chaos
from gateways.registry import DEFAULT_SANDBOX_ACCOUNTS
from payments.merchants import merchant_create
from payments.models import Merchant
from routing.models import MerchantRouting
from routing.selectors import clear_cache
from tests.waiting import wait_until

# The suite runs on the production settings (DEBUG off) but speaks plain HTTP to the test client
# and the live server: the defaults that assume HTTPS in front of the app (the redirect, cookies
# sent only over HTTPS) are off here. tests/aegispay/test_deploy.py checks them as shipped.
settings.SECURE_SSL_REDIRECT = False
settings.SESSION_COOKIE_SECURE = False
settings.CSRF_COOKIE_SECURE = False
# /metrics answers only its bearer token outside DEBUG: the suite scrapes with this one
# (scrape() below); tests/backoffice/test_metrics.py checks the token and the closed default.
METRICS_TOKEN = "suite-metrics-token-" + "0123456789abcdef" * 2
settings.METRICS_TOKEN = METRICS_TOKEN


def scrape() -> str:
    """What /metrics shows a Prometheus that holds the token."""
    from django.test import Client

    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    return response.content.decode()


@pytest.fixture(scope="session", autouse=True)
def _allow_test_flush(django_db_setup: None, django_db_blocker: object) -> Iterator[None]:
    """Transactional tests empty tables with TRUNCATE (the ``flush`` command), which the event
    table refuses.

    Only the flush ignores the TRUNCATE trigger; the row triggers that make events append-only
    stay on, and tests/payments/test_event_store.py proves all three on a connection of its
    own. Not the whole session: pgtrigger's ignore prefixes every statement of its thread
    with a ``set_config`` while it lasts, which a prepared statement cannot hold (one command
    each; common/db.py) and which would make every statement the tests count two.
    """
    from django.core.management.commands import flush

    handle = flush.Command.handle

    def handle_ignoring_the_trigger(self: flush.Command, *args: Any, **options: Any) -> None:
        with pgtrigger.ignore("payments.PaymentEvent:no_truncate"):
            handle(self, *args, **options)

    flush.Command.handle = handle_ignoring_the_trigger  # type: ignore[method-assign]
    try:
        yield
    finally:
        flush.Command.handle = handle  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """Rate-limit buckets live in Redis and every test client comes from 127.0.0.1: every test
    starts with full buckets."""
    from django_redis import get_redis_connection

    from common.rate_limit import KEY_PREFIX

    redis = get_redis_connection("default")
    keys = list(redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
    if keys:
        redis.delete(*keys)


@pytest.fixture(autouse=True)
def _fresh_gateway_health() -> Iterator[None]:
    """Breakers, bulkheads and chaos live in Redis and outlive a test: every test starts with
    the sandbox gateways closed, empty and without faults."""
    for name in DEFAULT_SANDBOX_ACCOUNTS:
        breaker_for(name).reset()
        bulkhead_for(name).reset()
    clear_chaos()
    yield
    clear_chaos()


def ensure_sandbox_gateway_configs() -> None:
    """Transactional tests empty every table, the data migration's gateway configuration
    included: put the sandbox accounts' rows back (the migration's own function)."""
    defaults = importlib.import_module("routing.migrations.0002_default_sandbox_gateways")
    defaults.create(django_apps, None)
    clear_cache()


class MerchantClient(APIClient):
    merchant: Merchant
    api_key: str


def make_client(
    name: str = "Acme", gateways: list[str] | None = None, strategy: str | None = None
) -> MerchantClient:
    """A merchant with a test key; ``strategy`` sets its routing strategy (default: score)."""
    ensure_sandbox_gateway_configs()
    merchant, raw_key = merchant_create(name=name, gateways=gateways)
    if strategy is not None:
        MerchantRouting.objects.create(merchant_id=merchant.id, strategy=strategy)
    client = MerchantClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    client.merchant = merchant
    client.api_key = raw_key
    return client


@pytest.fixture
def api(db: None) -> MerchantClient:
    """An API client authenticated as a fresh merchant with the two sandbox gateways."""
    return make_client()


@pytest.fixture
def other_api(db: None) -> MerchantClient:
    return make_client(name="Other merchant")


VISA = {"amount": 2000, "currency": "USD", "payment_method": {"type": "card", "token": "tok_visa"}}


# --- real Celery worker processes, for the end-to-end tests ---

WorkerFactory = Callable[..., subprocess.Popen]

# Fast retries so that tests of retry paths take a second, not a minute.
FAST = {"GATEWAY_RETRY_BASE_SECONDS": "0.1", "GATEWAY_RETRY_MAX_SECONDS": "0.5"}


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start ``celery worker`` processes on the test database and queue; all stop at teardown.

    Keyword arguments become environment variables of the worker (settings overrides);
    ``queues`` (comma-separated) replaces the default of the task queue and the outbox queue;
    ``concurrency`` is the number of pool processes.
    """
    celery_app.control.purge()
    started: list[subprocess.Popen] = []

    def start(
        *, queues: str | None = None, concurrency: int = 2, **overrides: str
    ) -> subprocess.Popen:
        queues = queues or f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.CELERY_OUTBOX_QUEUE}"
        log = tmp_path / f"worker-{len(started)}.log"
        env = {
            **os.environ,
            "DATABASE_NAME": connection.settings_dict["NAME"],
            "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            **FAST,
            **overrides,
        }
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "aegispay", "worker",
                    "--loglevel", "INFO", "--concurrency", str(concurrency), "--without-gossip",
                    "--without-mingle", "--without-heartbeat",
                    "-Q", queues,
                ],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started.append(process)
        wait_until(lambda: "ready." in log.read_text(), timeout=60)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        process.wait(timeout=30)


@pytest.fixture
def worker(start_worker: WorkerFactory) -> subprocess.Popen:
    """One worker with the default settings."""
    return start_worker()


@pytest.fixture
def partitions_restored(django_db_blocker: Any) -> Iterator[None]:
    """Partitions a test makes (common/partitions.py) are dropped after it: they outlive the
    flush between tests, and every later query of their tables would plan over them."""
    from common.partitions import drop_partition, partitions_of, registered

    def current() -> dict[str, set[str]]:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            return {
                table: set(partitions_of(cursor, table))
                for spec in registered()
                for table, _key in spec.members
            }

    before = current()
    yield
    after = current()
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        for spec in registered():
            for table, _key in reversed(spec.members):
                for name in sorted(after[table] - before[table]):
                    drop_partition(cursor, table, name)


@pytest.fixture
def own_connection(db: None) -> Iterator[Any]:
    """A psycopg connection of its own to the test database, in autocommit: not the test's,
    whose thread ignores the event table's TRUNCATE trigger so that transactional tests can
    flush, and free to hold locks the test's code must meet."""
    import psycopg

    config = connection.settings_dict
    with psycopg.connect(
        dbname=config["NAME"],
        user=config["USER"],
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        autocommit=True,
    ) as conn:
        yield conn
