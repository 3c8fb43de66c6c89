"""The relay process SIGKILLed again and again while a thousand payments' events flow: every
event still reaches the event bus and every merchant webhook receiver exactly once in effect
(deduplicated by event id), in per-payment order, none lost; the read models take each once.

Real processes throughout: the relay (and the in-process consumers) in processes forked by
``tests/outbox/relay_forker.py`` and killed with SIGKILL, a Celery worker sending the webhooks,
the real PostgreSQL, Redis and the event bus (RabbitMQ when ``EVENT_BUS_URL`` is AMQP).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from aegispay.celery import app as celery_app
from outbox.bus import is_amqp
from outbox.models import OutboxConsumerMark, OutboxMessage
from payments.eventstore import payment_transition
from payments.merchants import merchant_create
from payments.models import PaymentAuditEntry, PaymentEvent
from payments.services import payment_create
from tests.outbox.conftest import Listener
from tests.waiting import wait_until
from tests.webhooks.receivers import Receiver
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_endpoint_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PAYMENTS = 1000
KILLS = 50
REPO = Path(__file__).resolve().parents[2]
CONFIGURED_BUS = "amqp" if is_amqp(os.environ.get("EVENT_BUS_URL", "")) else "redis"


def backlog() -> int:
    """Events the relay has not published plus events a consumer has not applied."""
    return (
        OutboxMessage.objects.filter(state="pending").count()
        + OutboxConsumerMark.objects.filter(applied_at__isnull=True).count()
    )


def first_seen(ids_in_arrival_order: list[tuple[str, str, int]]) -> dict[str, list[int]]:
    """Per payment, the sequences in order of first arrival (a redelivery is a duplicate)."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for event_id, payment_id, sequence in ids_in_arrival_order:
        if event_id not in seen:
            seen.add(event_id)
            order[payment_id].append(sequence)
    return order


def delivered(expected: list[tuple[Receiver, int]]) -> bool:
    return all(len(receiver.processed) == count for receiver, count in expected)


@pytest.mark.parametrize("bus_url", [CONFIGURED_BUS], indirect=True)
def test_a_relay_killed_fifty_times_loses_and_doubles_nothing(
    bus_url: str,
    listener: Listener,
    start_worker: Any,
    receivers: Callable[..., Receiver],
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    merchant = merchant_create(name="Killed relay shop")[0]
    # Two receivers: one takes every event, one only the second event of each payment.
    subscriptions = {"*": receivers(), "payment.processing": receivers()}
    for pattern, receiver in subscriptions.items():
        _endpoint, receiver.secret = webhook_endpoint_create(
            merchant_id=merchant.id, url=receiver.url, events=[pattern]
        )
    endpoints = {receiver.url: pattern for pattern, receiver in subscriptions.items()}
    # The webhook sends go to a queue of their own, served by a worker of their own: the
    # payments' processing tasks (sent to the default queue) wait unserved, so the events are
    # exactly the two this test writes per payment, and the forked processes are the only
    # relay and consumers. The relay processes run the webhook sweep, as beat would: a relay
    # killed between its commit and the enqueue of the sends leaves work only the sweep finds.
    hooks_queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}.hooks-{uuid.uuid4().hex[:8]}"
    start_worker(
        queues=hooks_queue,
        concurrency=4,
        CELERY_QUEUE=hooks_queue,
        WEBHOOK_ALLOW_PRIVATE_URLS="1",
        WEBHOOK_RETRY_BASE_SECONDS="0.2",
        WEBHOOK_RETRY_MAX_SECONDS="1",
    )
    env = {
        **os.environ,
        "DATABASE_NAME": connection.settings_dict["NAME"],
        "CELERY_QUEUE": hooks_queue,
        "EVENT_BUS_URL": bus_url,
        "EVENT_BUS_EXCHANGE": settings.EVENT_BUS_EXCHANGE,
        "WEBHOOK_ALLOW_PRIVATE_URLS": "1",
    }
    log = (tmp_path / "relay.log").open("w")
    forker = subprocess.Popen(
        [sys.executable, "-m", "tests.outbox.relay_forker"],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        text=True, start_new_session=True,
    )  # fmt: skip
    assert forker.stdin is not None and forker.stdout is not None
    payment_ids: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(PAYMENTS):
                payment = payment_create(
                    merchant=merchant,
                    amount=1000,
                    currency="USD",
                    payment_method={"type": "card", "token": "tok_visa"},
                    actor="test",
                )
                payment_transition(
                    payment_id=payment.id,
                    transition="start_processing",
                    actor="test",
                    changes={"gateway": "sandbox_a"},
                )
                payment_ids.append(payment.id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def fork() -> int:
        forker.stdin.write("fork\n")  # type: ignore[union-attr]
        forker.stdin.flush()  # type: ignore[union-attr]
        return int(forker.stdout.readline())  # type: ignore[union-attr]

    try:
        assert forker.stdout.readline().strip() == "ready"
        producer = threading.Thread(target=produce)
        producer.start()
        busy_kills = 0
        for _ in range(KILLS):
            relay = fork()
            time.sleep(random.uniform(0.05, 0.6))
            busy = backlog() > 0
            os.kill(relay, signal.SIGKILL)
            busy_kills += busy
        fork()  # one more relay, left alive to finish the work
        producer.join(timeout=120)
        events = PAYMENTS * 2
        # Generous deadlines: on 2 cores the whole test takes about a minute alone, but more
        # than twice that when other test runs load the machine.
        wait_until(lambda: backlog() == 0, timeout=120, interval=0.2)
        counts = [(subscriptions["*"], events), (subscriptions["payment.processing"], PAYMENTS)]
        wait_until(lambda: delivered(counts), timeout=180, interval=0.5)
        bus = [(b["id"], b["payment"], b["sequence"]) for b in listener.drain(expect=events)]
    finally:
        os.killpg(forker.pid, signal.SIGKILL)
        forker.wait(timeout=10)
        log.close()
        celery_app.control.purge()  # the payments' processing tasks nobody served

    assert errors == []
    assert busy_kills >= KILLS // 2, "most kills must land while the relay has work"
    all_events = {
        event_id: (payment_id, sequence)
        for event_id, payment_id, sequence in PaymentEvent.objects.values_list(
            "id", "payment_id", "sequence"
        )
    }
    assert len(all_events) == events
    in_order = {payment_id: [1, 2] for payment_id in payment_ids}
    # The bus: every event, in payment order by first arrival; redeliveries are duplicates.
    assert {event_id for event_id, _, _ in bus} == set(all_events)
    assert first_seen(bus) == in_order
    # Every receiver: every event once in effect, nothing refused.
    wanted = {
        "*": set(all_events),
        "payment.processing": {e for e, (_, sequence) in all_events.items() if sequence == 2},
    }
    for pattern, receiver in subscriptions.items():
        assert sorted(receiver.processed) == sorted(wanted[pattern])
        assert receiver.refused == 0
    # The webhooks consumer made one delivery per endpoint and event, in payment order.
    deliveries = list(
        WebhookDelivery.objects.order_by("id").values_list("event_id", "endpoint__url", "status")
    )
    assert len(deliveries) == 3 * PAYMENTS
    assert {status for _, _, status in deliveries} == {"succeeded"}
    created = {
        pattern: first_seen([(e, *all_events[e]) for e, url, _ in deliveries if url == hook])
        for hook, pattern in endpoints.items()
    }
    assert created == {
        "*": in_order,
        "payment.processing": {payment_id: [2] for payment_id in payment_ids},
    }
    # The read models applied every event (once: the audit row is unique per event).
    assert PaymentAuditEntry.objects.count() == events
