"""The in-process consumers (read models, merchant webhooks) read the outbox themselves.

They never depend on the event bus: the relay publishes to the bus for outside consumers, and
each in-process consumer works through its own ``OutboxConsumerMark`` rows, written with the
event. One pass of one consumer, in one transaction:

1. **Claim** unapplied marks with ``FOR UPDATE SKIP LOCKED``, so passes running at once never
   take the same event. A mark is claimable only when no earlier event of its aggregate is
   still unapplied for this consumer (per-payment order when passes race); each claimed head
   brings the contiguous unapplied marks behind it. Order comes from the marks, never from
   "the highest id seen": ids commit out of order.
2. **Apply**: the events, read from their outbox rows, go to the consumer's function in
   per-aggregate sequence order.
3. **Mark** the marks applied in the same transaction, so an event takes effect exactly once
   per consumer: a pass killed before its commit applied nothing and the next pass takes the
   same events again.

If the consumer raises for a batch, the batch is applied again one aggregate at a time, each in
a savepoint, so one event the consumer cannot take holds up only its own aggregate (logged, and
retried on every pass). Passes are kicked after the commit of every event (``kick_consumers``)
and swept by beat, on the outbox queue, independently of the relay and its outage backoff.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from common.db import bound_cursor

from .registry import consumer_apply, consumer_names
from .services import CONSUMERS_KICK_KEY, note_run_finished
from .types import EVENT_COLUMNS, OutboxEvent

logger = logging.getLogger(__name__)

# Heads: each aggregate's oldest unapplied event for this consumer, not taken by another pass.
_CLAIM_HEADS = """
SELECT c.id, c.message_id, c.aggregate_id, c.sequence, c.message_created_at
FROM outbox_outboxconsumermark c
WHERE c.consumer = %s AND c.applied_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM outbox_outboxconsumermark e
      WHERE e.consumer = c.consumer AND e.aggregate_id = c.aggregate_id
        AND e.applied_at IS NULL AND e.sequence < c.sequence
  )
ORDER BY c.id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

# The unapplied marks behind the claimed heads (no other pass can hold them: their head is
# ours); a gap in the sequence is cut off below and waits for a later pass.
_CLAIM_FOLLOWERS = """
SELECT id, message_id, aggregate_id, sequence, message_created_at
FROM outbox_outboxconsumermark
WHERE consumer = %s AND aggregate_id = ANY(%s) AND applied_at IS NULL AND NOT (id = ANY(%s))
ORDER BY aggregate_id, sequence
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

_MARK_APPLIED = "UPDATE outbox_outboxconsumermark SET applied_at = now() WHERE id = ANY(%s)"

# The events of claimed marks, by their rows' ids and times: the times name the partitions, so
# PostgreSQL plans only those.
_EVENTS = f"""
SELECT id, {EVENT_COLUMNS}
FROM outbox_outboxmessage
WHERE id = ANY(%s) AND created_at = ANY(%s)
"""  # noqa: S608 - own SQL; values in params

_Mark = tuple[int, int, str, int, datetime]  # id, message id, aggregate id, sequence, its time


@dataclass(frozen=True, slots=True)
class ConsumerResult:
    """What one pass (or drain) of one consumer did."""

    claimed: int
    applied: int
    failed: int


def _claim(consumer: str, batch_size: int) -> list[_Mark]:
    """Lock up to ``batch_size`` applicable marks of ``consumer``, ordered by aggregate and
    sequence within each aggregate (aggregates in the order of their heads)."""
    with bound_cursor() as cursor:
        cursor.execute(_CLAIM_HEADS, [consumer, batch_size])
        heads: list[_Mark] = list(cursor.fetchall())
        room = batch_size - len(heads)
        followers: list[_Mark] = []
        if heads and room > 0:
            cursor.execute(
                _CLAIM_FOLLOWERS,
                [consumer, [m[2] for m in heads], [m[0] for m in heads], room],
            )
            followers = list(cursor.fetchall())
    runs: dict[str, list[_Mark]] = {m[2]: [m] for m in heads}
    cut: set[str] = set()
    for mark in followers:  # ordered by aggregate, sequence: keep each contiguous prefix
        run = runs[mark[2]]
        if mark[2] not in cut and run[-1][3] == mark[3] - 1:
            run.append(mark)
        else:
            cut.add(mark[2])  # a gap: the rest of this aggregate waits for a later pass
    return [m for run in runs.values() for m in run]


def _events(marks: list[_Mark]) -> dict[int, OutboxEvent]:
    """The events of ``marks`` by mark id, read from their outbox rows (one statement, not
    through the ORM: its compiler and models were a fifth of a consumer run's CPU)."""
    with connection.cursor() as cursor:
        cursor.execute(_EVENTS, [[m[1] for m in marks], sorted({m[4] for m in marks})])
        events = {row[0]: OutboxEvent.from_row(row[1:]) for row in cursor.fetchall()}
    return {m[0]: events[m[1]] for m in marks}


def _apply(consumer: str, marks: list[_Mark], events: dict[int, OutboxEvent]) -> None:
    consumer_apply(consumer)([events[m[0]] for m in marks])
    with connection.cursor() as cursor:
        cursor.execute(_MARK_APPLIED, [[m[0] for m in marks]])


def outbox_consumer_pass(*, consumer: str, batch_size: int | None = None) -> ConsumerResult:
    """Apply one batch of ``consumer``'s unapplied events; see the module docstring.

    Locks the claimed marks (only those) for the length of the pass; the outbox rows are only
    read, so the relay never waits for a consumer nor a consumer for the relay. An exception
    from the consumer is contained: its aggregate stays unapplied and counts as ``failed``.
    """
    batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
    with transaction.atomic():
        marks = _claim(consumer, batch_size)
        if not marks:
            return ConsumerResult(claimed=0, applied=0, failed=0)
        events = _events(marks)
        try:
            with transaction.atomic():
                _apply(consumer, marks, events)
            return ConsumerResult(claimed=len(marks), applied=len(marks), failed=0)
        except Exception:
            logger.exception("outbox consumer %s failed a batch; retrying per aggregate", consumer)
        runs: dict[str, list[_Mark]] = defaultdict(list)
        for mark in marks:
            runs[mark[2]].append(mark)
        applied = failed = 0
        for aggregate, run in runs.items():
            try:
                with transaction.atomic():
                    _apply(consumer, run, events)
                applied += len(run)
            except Exception:
                failed += len(run)
                logger.exception(
                    "outbox consumer %s failed on aggregate %s; it waits for a later pass",
                    consumer,
                    aggregate,
                )
    return ConsumerResult(claimed=len(marks), applied=applied, failed=failed)


def outbox_consumer_drain(
    *, consumer: str, batch_size: int | None = None, max_passes: int = 50
) -> ConsumerResult:
    """Run passes of ``consumer`` until one finds less than a full batch or fails, or
    ``max_passes``; returns the totals."""
    batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
    claimed = applied = failed = 0
    for _ in range(max_passes):
        result = outbox_consumer_pass(consumer=consumer, batch_size=batch_size)
        claimed, applied, failed = (
            claimed + result.claimed,
            applied + result.applied,
            failed + result.failed,
        )
        if result.failed or result.claimed < batch_size:
            break
    return ConsumerResult(claimed=claimed, applied=applied, failed=failed)


def outbox_consumers_run(*, batch_size: int | None = None) -> dict[str, int]:
    """What the consumers task does: drain every registered consumer in turn; returns how many
    events each applied. One consumer that raises does not stop the others."""
    try:
        get_redis_connection("default").delete(CONSUMERS_KICK_KEY)
    except RedisError:
        logger.warning("could not clear the consumers' kick; running anyway", exc_info=True)
    applied: dict[str, int] = {}
    for name in consumer_names():
        try:
            applied[name] = outbox_consumer_drain(consumer=name, batch_size=batch_size).applied
        except Exception:
            logger.exception("outbox consumer %s could not run", name)
            applied[name] = 0
    note_run_finished(CONSUMERS_KICK_KEY)
    return applied
