"""The relay as it runs in production: kicked after commit in a real Celery worker process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django_redis import get_redis_connection

from outbox.models import OutboxMessage
from outbox.services import KICK_KEY
from payments.models import PaymentEvent
from tests.conftest import VISA, make_client
from tests.outbox.conftest import Listener
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_events_of_a_payment_reach_the_bus_through_the_kicked_relay(
    bus_url: str,
    listener: Listener,
    start_worker: Any,
    settings: Any,
) -> None:
    start_worker(EVENT_BUS_URL=bus_url, EVENT_BUS_EXCHANGE=settings.EVENT_BUS_EXCHANGE)
    api = make_client(strategy="priority")
    get_redis_connection("default").delete(KICK_KEY)  # a kick of an earlier test was purged

    response = api.post("/v1/payments", data=json.dumps(VISA), content_type="application/json")
    payment_id = response.json()["id"]
    wait_until(
        lambda: api.get(f"/v1/payments/{payment_id}").json()["status"] == "completed", timeout=60
    )
    # No beat runs here: only the kicks after each commit drive the relay.
    wait_until(lambda: not OutboxMessage.objects.filter(state="pending").exists(), timeout=30)

    bodies = listener.drain(expect=5)
    assert [b["type"] for b in bodies] == [
        "payment.initiated",
        "payment.processing",
        "payment.authorized",
        "payment.captured",
        "payment.completed",
    ]
    assert [b["id"] for b in bodies] == list(
        PaymentEvent.objects.filter(payment_id=payment_id)
        .order_by("sequence")
        .values_list("id", flat=True)
    )


def test_a_kick_queues_one_relay_run_which_clears_it_when_it_starts(
    bus_url: str,
    start_worker: Any,
    settings: Any,
) -> None:
    from outbox.services import kick_relay

    redis = get_redis_connection("default")
    redis.delete(KICK_KEY, settings.CELERY_OUTBOX_QUEUE)
    kick_relay()
    kick_relay()  # already queued: no second run
    assert redis.get(KICK_KEY) == b"1"
    assert redis.llen(settings.CELERY_OUTBOX_QUEUE) == 1  # the relay's own queue

    start_worker(EVENT_BUS_URL=bus_url, EVENT_BUS_EXCHANGE=settings.EVENT_BUS_EXCHANGE)

    wait_until(lambda: redis.get(KICK_KEY) is None, timeout=30)


def test_every_beat_entry_names_a_registered_task() -> None:
    from aegispay.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings_module().CELERY_BEAT_SCHEDULE.values()}

    assert {
        "outbox.tasks.outbox_relay",
        "outbox.tasks.outbox_prune",
        "outbox.webhook_tasks.webhook_deliveries_sweep",
    } <= scheduled
    assert scheduled <= set(app.tasks)
    assert "outbox.webhook_tasks.webhook_delivery_send" in app.tasks


def settings_module() -> Any:
    from django.conf import settings

    return settings
