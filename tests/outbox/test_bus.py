"""The event bus's own encoding of a message's AMQP properties, byte for byte against py-amqp's
(``Message._serialize_properties``), which it replaces on the relay's hot path. Delivery over
the real brokers is tested in ``test_relay.py``."""

from __future__ import annotations

from typing import Any

import pytest
from amqp.basic_message import Message

from outbox.bus import _properties


def by_py_amqp(headers: dict[str, Any], message_id: str) -> bytes:
    message = Message(
        b"{}",
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
        priority=0,
        message_id=message_id,
    )
    encoded: bytes = message._serialize_properties()
    return encoded


EVENT_HEADERS = {
    "event_id": "evt_01JEXAMPLE",
    "event_type": "payment.captured",
    "aggregate_type": "payment",
    "aggregate_id": "pay_01JEXAMPLE",
    "sequence": 4,
    "merchant_id": "mer_01JEXAMPLE",
}


@pytest.mark.parametrize(
    "headers",
    [
        EVENT_HEADERS,
        {**EVENT_HEADERS, "merchant_id": "mér_ünïcødé_€", "odd": "\udc80"},
        {**EVENT_HEADERS, "sequence": 2147483647},
        {**EVENT_HEADERS, "sequence": 2147483648},  # py-amqp's "L": the fallback
        {**EVENT_HEADERS, "sequence": -2147483647},
        {**EVENT_HEADERS, "flag": True, "nothing": None},  # the fallback
        {"k" * 255: "v"},
        {},
    ],
)
def test_properties_are_what_py_amqp_would_send(headers: dict[str, Any]) -> None:
    assert _properties(headers, 2, "evt_01JEXAMPLE") == by_py_amqp(headers, "evt_01JEXAMPLE")
