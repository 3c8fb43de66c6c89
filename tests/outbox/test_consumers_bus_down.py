"""The in-process consumers (merchant webhooks, read models) read the outbox themselves: with the
event bus down, a payment's events still reach the merchant's webhook receiver and the read
models, driven only by the after-commit kicks in a real Celery worker."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from django_redis import get_redis_connection

from outbox.bus import is_amqp
from outbox.models import OutboxMessage
from payments.merchants import merchant_create
from payments.models import MerchantDailySummary, PaymentAuditEntry, PaymentEvent
from tests.payments.helpers import payment_in
from tests.waiting import wait_until
from tests.webhooks.receivers import Receiver
from webhooks.services import webhook_endpoint_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def closed_port_url() -> str:
    """An event bus URL of the configured kind on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if is_amqp(os.environ.get("EVENT_BUS_URL", "")):
        return f"amqp://guest:guest@127.0.0.1:{port}//"
    return f"redis://127.0.0.1:{port}/0"


def test_webhooks_and_read_models_do_not_wait_for_a_bus_that_is_down(
    start_worker: Any, receivers: Callable[..., Receiver], settings: Any
) -> None:
    down = closed_port_url()
    settings.EVENT_BUS_URL = down
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    get_redis_connection("default").flushdb()  # no kick or outage mark of an earlier test
    start_worker(
        EVENT_BUS_URL=down, EVENT_BUS_PUBLISH_TIMEOUT_SECONDS="1", WEBHOOK_ALLOW_PRIVATE_URLS="1"
    )
    merchant = merchant_create(name="Bus down shop")[0]
    receiver = receivers()
    _endpoint, receiver.secret = webhook_endpoint_create(
        merchant_id=merchant.id, url=receiver.url, events=["*"]
    )

    payment = payment_in(merchant, "completed")

    events = list(PaymentEvent.objects.filter(payment=payment).values_list("id", flat=True))
    wait_until(lambda: len(receiver.processed) == 5, timeout=45)
    wait_until(lambda: PaymentAuditEntry.objects.filter(payment=payment).count() == 5, timeout=15)
    assert sorted(receiver.processed) == sorted(events)
    assert receiver.refused == 0
    assert list(
        MerchantDailySummary.objects.filter(merchant=merchant, payment_count__gt=0).values_list(
            "status", "payment_count", "amount_captured"
        )
    ) == [("completed", 1, 1000)]
    # The bus really was down the whole time: nothing was published.
    assert OutboxMessage.objects.filter(state="published").count() == 0
    assert OutboxMessage.objects.count() == 5
