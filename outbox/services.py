"""Writes to the outbox. Callers pass plain values; this app never imports ``payments``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction

from .models import OutboxMessage


def outbox_message_create(
    *,
    event_id: str,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    sequence: int,
    merchant_id: str,
    payload: Mapping[str, Any],
) -> OutboxMessage:
    """Insert the outbox row for one event.

    Must run inside the transaction that wrote the event (enforced: it raises
    ``TransactionManagementError`` outside ``atomic``), so the row exists exactly when the
    event does. The relay (issue 5) publishes pending rows.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "outbox rows are written inside the transaction of their event"
        )
    return OutboxMessage.objects.create(
        event_id=event_id,
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=sequence,
        merchant_id=merchant_id,
        payload=dict(payload),
    )
