"""The example consumer: binds patterns, prints each event once, skips redelivered ids."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from outbox.bus import EventBus, bus_connection, consumer_queue
from outbox.relay import outbox_relay_drain
from outbox.types import OutboxEvent
from payments.merchants import merchant_create
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db(transaction=True)


def consume(queue: str, *patterns: str, expect: int) -> tuple[list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    binds = [arg for pattern in patterns for arg in ("--bind", pattern)]
    call_command(
        "consume_events", *binds, "--queue", queue, "--max-messages", str(expect),
        "--idle-timeout", "5", stdout=out, stderr=err,
    )  # fmt: skip
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_it_prints_the_bound_events_once_and_skips_a_redelivered_id(bus_url: str) -> None:
    queue = f"aegispay.test.consumer.{uuid.uuid4().hex[:8]}"
    with bus_connection() as connection:  # the consumer's durable queue exists before publishing
        consumer_queue(queue, ["payment.*"])(connection.default_channel).declare()
    payment = payment_in(merchant_create(name="Consumer shop")[0], "processing")
    outbox_relay_drain()
    duplicate = OutboxEvent(
        event_id=payment.events.get(sequence=1).id,
        event_type="payment.initiated",
        aggregate_type="payment",
        aggregate_id=payment.id,
        sequence=1,
        merchant_id=payment.merchant_id,
        payload={"id": payment.events.get(sequence=1).id, "type": "payment.initiated"},
    )
    bus = EventBus()
    bus.publish(duplicate)  # at-least-once delivery: the same event id again
    bus.close()

    events, log = consume(queue, "payment.*", expect=3)

    assert [(e["type"], e["sequence"]) for e in events] == [
        ("payment.initiated", 1),
        ("payment.processing", 2),
    ]
    assert f"duplicate {duplicate.event_id} skipped" in log
    with bus_connection() as connection:
        consumer_queue(queue, ["payment.*"])(connection.default_channel).delete()


def test_a_pattern_that_matches_nothing_receives_nothing(bus_url: str) -> None:
    queue = f"aegispay.test.consumer.{uuid.uuid4().hex[:8]}"
    with bus_connection() as connection:
        consumer_queue(queue, ["refund.*"])(connection.default_channel).declare()
    payment_in(merchant_create(name="Consumer shop")[0], "processing")
    outbox_relay_drain()

    events, log = consume(queue, "refund.*", expect=1)

    assert events == []
    assert "handled 0 messages" in log


def test_bad_arguments_are_refused(bus_url: str) -> None:
    with pytest.raises(CommandError, match="not a routing-key pattern"):
        call_command("consume_events", "--bind", "payment..x", "--max-messages", "1")
    with pytest.raises(CommandError, match="--max-messages"):
        call_command("consume_events", "--max-messages", "0")
