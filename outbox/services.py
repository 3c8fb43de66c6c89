"""Writes to the outbox. Callers pass plain values; this app never imports ``payments``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from .models import OutboxConsumerMark, OutboxMessage
from .registry import consumer_names

logger = logging.getLogger(__name__)

# Set while a relay task is queued; the task clears it when it starts (outbox/tasks.py).
KICK_KEY = "aegispay:outbox:kick"
# The same for the in-process consumers' task (outbox/consumers.py).
CONSUMERS_KICK_KEY = "aegispay:outbox:consumers:kick"


def _kick(key: str, task_name: str) -> None:
    """Queue ``outbox.tasks.<task_name>`` unless a run is queued already (``key`` set, NX with
    a TTL of ``OUTBOX_KICK_TTL_SECONDS`` in case its task is lost). A Redis or broker error is
    logged, never raised: the beat sweep is the guarantee."""
    try:
        if get_redis_connection("default").set(
            key, "1", nx=True, ex=max(1, round(settings.OUTBOX_KICK_TTL_SECONDS))
        ):
            from . import tasks

            getattr(tasks, task_name).delay()
    except (RedisError, OSError, ConnectionError):
        logger.warning("could not kick %s; the beat sweep will", task_name, exc_info=True)


def kick_relay() -> None:
    """Queue a relay run unless one is already queued (runs after the commit of an event).

    At most one kick waits in the queue: the task clears ``KICK_KEY`` before its first pass,
    so an event committed after that sets it again and gets a run of its own. The key expires
    after ``OUTBOX_KICK_TTL_SECONDS`` in case its task is lost. If Redis or the broker is down
    the event is not lost either: the beat sweep publishes it.
    """
    _kick(KICK_KEY, "outbox_relay")


def kick_consumers() -> None:
    """Queue a run of the in-process consumers unless one is already queued (after the commit
    of an event), as ``kick_relay`` does for the relay; the beat sweep is the guarantee."""
    _kick(CONSUMERS_KICK_KEY, "outbox_consumers")


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
    event does, with one ``OutboxConsumerMark`` per registered in-process consumer. The relay
    (``outbox/relay.py``) publishes pending rows to the event bus; the consumers
    (``outbox/consumers.py``) apply their marks, independently of the relay. Both are kicked
    after commit for low latency, and beat sweeps for the guarantee.
    """
    if not transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "outbox rows are written inside the transaction of their event"
        )
    message = OutboxMessage.objects.create(
        event_id=event_id,
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        sequence=sequence,
        merchant_id=merchant_id,
        payload=dict(payload),
    )
    names = consumer_names()
    OutboxConsumerMark.objects.bulk_create(
        OutboxConsumerMark(
            consumer=name,
            message=message,
            event_id=event_id,
            aggregate_id=aggregate_id,
            sequence=sequence,
        )
        for name in names
    )
    # robust: a failed kick must not fail the request that committed the event.
    transaction.on_commit(kick_relay, robust=True)
    if names:
        transaction.on_commit(kick_consumers, robust=True)
    return message
