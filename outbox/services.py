"""Writes to the outbox. Callers pass plain values; this app never imports ``payments``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_redis import get_redis_connection
from redis.client import Pipeline
from redis.exceptions import RedisError

from common.db import bound_cursor
from common.rows import Statement

from .registry import consumer_names
from .types import OutboxEvent

logger = logging.getLogger(__name__)

# Set while a relay task is queued; the task clears it when it starts (outbox/tasks.py).
KICK_KEY = "aegispay:outbox:kick"
# The same for the in-process consumers' task (outbox/consumers.py).
CONSUMERS_KICK_KEY = "aegispay:outbox:consumers:kick"
# The task each kick queues (outbox/tasks.py).
_TASKS = {KICK_KEY: "outbox_relay", CONSUMERS_KICK_KEY: "outbox_consumers"}
# The kicks gathered by the innermost ``kicks_deferred`` block of this thread, in order.
_gathered: ContextVar[dict[str, None] | None] = ContextVar("outbox_kicks_gathered", default=None)


def _kick_ttl() -> int:
    """The kick's key lives until its task has surely started (``OUTBOX_KICK_TTL_SECONDS``,
    and at least a second past the delay)."""
    ttl: float = settings.OUTBOX_KICK_TTL_SECONDS
    delay: float = settings.OUTBOX_KICK_DELAY_SECONDS
    return max(1, round(ttl), math.ceil(delay) + 1)


def _ran_key(kick_key: str) -> str:
    return f"{kick_key}:ran"


def note_run_finished(kick_key: str, *, pipe: Pipeline | None = None) -> None:
    """A kicked task's run ended (the relay's, the consumers'): for the next
    ``OUTBOX_KICK_DELAY_SECONDS`` a kick of it is busy traffic and queues its run that much
    later. Given ``pipe``, the note is only added to it (the caller sends it with its own
    commands, in one round trip); otherwise it is sent now, and a Redis error is logged: the
    next run then starts at once, as when idle."""
    delay_ms = round(settings.OUTBOX_KICK_DELAY_SECONDS * 1000)
    if delay_ms <= 0:
        return
    if pipe is not None:
        pipe.set(_ran_key(kick_key), "1", px=delay_ms)
        return
    try:
        get_redis_connection("default").set(_ran_key(kick_key), "1", px=delay_ms)
    except RedisError:
        logger.warning("could not note the end of a %s run", kick_key, exc_info=True)


def _kick(*keys: str) -> None:
    """Queue the task of each of ``keys`` (``_TASKS``) unless a run of it is queued already (its
    key set, NX with a TTL of ``OUTBOX_KICK_TTL_SECONDS`` in case its task is lost): one Redis
    round trip for all of them. A Redis or broker error is logged, never raised: the beat sweep
    is the guarantee.

    When a run of the task ended less than ``OUTBOX_KICK_DELAY_SECONDS`` ago (busy), the run is
    queued to start that long after the kick, so that it takes every event committed meanwhile
    (their kicks find the key set and queue nothing): under load, fewer and larger runs, each
    with its fixed costs (the task, the claims, the read models' five statements). Idle, a
    kick's run starts at once."""
    try:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        for key in keys:
            pipe.set(key, "1", nx=True, ex=_kick_ttl())
        for key in keys:
            pipe.exists(_ran_key(key))
        answers = pipe.execute()
        from . import tasks

        for key, was_set, busy in zip(
            keys, answers[: len(keys)], answers[len(keys) :], strict=True
        ):
            if was_set:
                task = getattr(tasks, _TASKS[key])
                if busy:
                    task.apply_async(countdown=settings.OUTBOX_KICK_DELAY_SECONDS)
                else:
                    task.delay()
    except (RedisError, OSError, ConnectionError):
        logger.warning("could not kick %s; the beat sweep will", keys, exc_info=True)


def kick_relay() -> None:
    """Queue a relay run unless one is already queued (runs after the commit of an event).

    At most one kick waits in the queue: the task clears ``KICK_KEY`` before its first pass,
    so an event committed after that sets it again and gets a run of its own. The key expires
    after ``OUTBOX_KICK_TTL_SECONDS`` in case its task is lost. If Redis or the broker is down
    the event is not lost either: the beat sweep publishes it.
    """
    _kick(KICK_KEY)


def kick_consumers() -> None:
    """Queue a run of the in-process consumers unless one is already queued (after the commit
    of an event), as ``kick_relay`` does for the relay; the beat sweep is the guarantee."""
    _kick(CONSUMERS_KICK_KEY)


def _kick_after_commit() -> None:
    """The relay's and the consumers' kicks for one committed transaction, in one round trip;
    inside ``kicks_deferred``, gathered for its end instead."""
    keys = (KICK_KEY, CONSUMERS_KICK_KEY) if consumer_names() else (KICK_KEY,)
    gathered = _gathered.get()
    if gathered is not None:
        gathered.update(dict.fromkeys(keys))
        return
    _kick(*keys)


@contextmanager
def kicks_deferred() -> Iterator[None]:
    """Gather the kicks of every transaction committed in this block and send them once as it
    ends, raised or not: a task's run that commits several transactions with events (a gateway
    run: the plan, the authorisation, the capture) makes one Redis round trip for its kicks, not
    one per transaction (issue 13). Its events wait in the outbox until then, durable; only
    the start of their publication waits for the run's end, and the beat sweep remains the
    guarantee if the process dies first. A block inside another gathers for the outer one."""
    if _gathered.get() is not None:
        yield
        return
    gathered: dict[str, None] = {}
    token = _gathered.set(gathered)
    try:
        yield
    finally:
        _gathered.reset(token)
        if gathered:
            _kick(*gathered)


def _kick_once_after_commit() -> None:
    """Register ``_kick_after_commit`` once per transaction, however many events it writes.
    (A registration that a rolled-back savepoint discarded is gone from the list, so the next
    event registers it again.)"""
    pending = transaction.get_connection().run_on_commit
    if not any(func is _kick_after_commit for _, func, _ in pending):
        # robust: a failed kick must not fail the request that committed the event.
        transaction.on_commit(_kick_after_commit, robust=True)


# One statement for the rows and their consumer marks (the marks copy their row's id and time,
# their foreign key and partition key), after the caller's own writes (``along``).
_INSERT = """
WITH {along}message AS (
    INSERT INTO outbox_outboxmessage (
        event_id, event_type, aggregate_type, aggregate_id, sequence, merchant_id, payload,
        state, attempts, last_error, created_at)
    VALUES {rows}
    RETURNING id, created_at, event_id, aggregate_id, sequence
)
INSERT INTO outbox_outboxconsumermark (
    consumer, message_id, message_created_at, event_id, aggregate_id, sequence)
SELECT consumer, message.id, message.created_at, message.event_id, message.aggregate_id,
    message.sequence
FROM message, unnest(%s::text[]) AS consumer
ORDER BY message.id, consumer
"""
_ROW = "(%s, %s, %s, %s, %s, %s, %s::jsonb, 'pending', 0, '', %s)"


def outbox_messages_create(
    events: Sequence[OutboxEvent], *, along: Sequence[Statement] = ()
) -> None:
    """Insert the outbox rows of ``events``, in their order.

    Must run inside the transaction that wrote the events (enforced: it raises
    ``TransactionManagementError`` outside ``atomic``), so a row exists exactly when its event
    does, with one ``OutboxConsumerMark`` per registered in-process consumer, in one
    statement. The relay (``outbox/relay.py``) publishes pending rows to the event bus; the
    consumers (``outbox/consumers.py``) apply their marks, independently of the relay. Both are
    kicked once after the commit (one kick per transaction, not per event), and beat sweeps for
    the guarantee.

    ``along``: the caller's writes of the same transaction (``common/rows.py``: the events and
    their payment), sent in the same statement as data-modifying ``WITH`` queries, so that the
    whole is one round trip. PostgreSQL runs every part or none; foreign keys between the
    parts are checked at the statement's end, when all of them are written.
    """
    if not events:
        raise ValueError("no events to write")
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise transaction.TransactionManagementError(
            "outbox rows are written inside the transaction of their event"
        )
    ctes = "".join(f"written_{n} AS ({sql}), " for n, (sql, _) in enumerate(along))
    now = timezone.now()
    with bound_cursor() as cursor:
        cursor.execute(
            _INSERT.format(along=ctes, rows=", ".join([_ROW] * len(events))),
            [
                *(param for _, params in along for param in params),
                *(
                    value
                    for event in events
                    for value in (
                        event.event_id,
                        event.event_type,
                        event.aggregate_type,
                        event.aggregate_id,
                        event.sequence,
                        event.merchant_id,
                        json.dumps(event.payload),
                        now,
                    )
                ),
                list(consumer_names()),
            ],
        )
    _kick_once_after_commit()
