"""The outbox relay: pending rows to the event bus, for outside consumers.

The in-process consumers (read models, merchant webhooks) do not go through here: they read the
outbox themselves (``outbox/consumers.py``), so a bus outage never holds them up.

One pass, in one transaction:

1. **Claim** with ``FOR UPDATE SKIP LOCKED``, so relays running at once never take the same row.
   A row is claimable only when no earlier event of its aggregate is still unpublished: that
   is what keeps per-payment order when several relays race (a relay that skips a locked
   ``payment.authorized`` cannot take the ``payment.captured`` behind it). Each claimed head
   then brings the pending rows behind it, contiguous in sequence, so a payment's burst of
   events leaves in one pass.
2. **Publish** in waves: each wave holds the next event of every claimed aggregate, so one
   round of publisher confirms covers many messages while a payment's events still leave one
   after the other. A broker outage stops the pass (nothing later would succeed) and counts
   against no row; a message the broker refuses blocks only the rest of its own aggregate.
3. **Record**: published rows are marked published; refused rows get ``attempts + 1``, the
   error, and a next attempt after an
   exponential backoff with full jitter, or are dead-lettered after ``OUTBOX_MAX_ATTEMPTS``.
   During an outage the relay as a whole backs off (``outbox/tasks.py``) and beat keeps
   sweeping, so publishing resumes within seconds of the broker's return.

Delivery to the bus is at least once (a crash between the broker's confirm and the commit
publishes again); every message carries the event id so consumers deduplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from common import backoff
from common.db import bound_cursor
from common.partitions import default_name, drop_partitions

from .bus import BusUnavailable, EventBus, event_bus
from .models import OutboxMessage
from .partitions import OUTBOX
from .services import KICK_KEY, kick_relay, note_run_finished
from .types import EVENT_COLUMNS, OutboxEvent

logger = logging.getLogger(__name__)

# Set (with a TTL) while the relays back off from an event bus outage; OUTAGES_KEY counts the
# consecutive outages that set it, for the exponential part of the delay.
OUTAGE_KEY = "aegispay:outbox:outage"
OUTAGES_KEY = "aegispay:outbox:outages"

# Heads: the oldest unpublished event of each aggregate, due, not taken by another relay.
# Read in the order of the partial index ``outbox_pending_idx`` (next_attempt_at, id WHERE
# pending) in two ranges, rows due for a retry and then rows never tried (next_attempt_at IS
# NULL), so a pass reads only pending rows: ORDER BY id over the table walked every published
# row still kept (OUTBOX_RETENTION_HOURS) ahead of the first pending one, and rows backing off
# are never read. Within the second range the order is id order.
_HEADS = """
SELECT m.id, {event_columns}, m.attempts
FROM outbox_outboxmessage m
WHERE m.state = 'pending'
  AND {due}
  AND NOT EXISTS (
      SELECT 1 FROM outbox_outboxmessage e
      WHERE e.aggregate_id = m.aggregate_id AND e.state <> 'published' AND e.sequence < m.sequence
  )
ORDER BY m.next_attempt_at, m.id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
_M_EVENT_COLUMNS = ", ".join(f"m.{column}" for column in EVENT_COLUMNS.split(", "))
_CLAIM_RETRY_HEADS = _HEADS.format(due="m.next_attempt_at <= now()", event_columns=_M_EVENT_COLUMNS)
_CLAIM_NEW_HEADS = _HEADS.format(due="m.next_attempt_at IS NULL", event_columns=_M_EVENT_COLUMNS)

# The rows behind the claimed heads. No other relay can hold them (their head is ours and
# unpublished), SKIP LOCKED only guards against surprises; gaps are cut off below.
_CLAIM_FOLLOWERS = f"""
SELECT id, {EVENT_COLUMNS}, attempts
FROM outbox_outboxmessage
WHERE aggregate_id = ANY(%s) AND state = 'pending' AND NOT (id = ANY(%s))
ORDER BY aggregate_id, sequence
LIMIT %s
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - own SQL; values in params

# One statement for the pass's published rows, their ids as one array parameter (already
# locked by the claim).
_MARK_PUBLISHED = """
UPDATE outbox_outboxmessage
SET state = 'published', published_at = %s, next_attempt_at = NULL, last_error = ''
WHERE id = ANY(%s)
"""


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    event: OutboxEvent
    attempts: int


@dataclass(frozen=True, slots=True)
class RelayResult:
    """What one pass did."""

    claimed: int
    published: int
    failed: int
    dead: int
    bus_down: bool


def _rows(cursor: Any) -> list[_Row]:
    """Rows read as ``id, EVENT_COLUMNS, attempts``."""
    return [
        _Row(id=row[0], event=OutboxEvent.from_row(row[1:-1]), attempts=row[-1])
        for row in cursor.fetchall()
    ]


def _claim(batch_size: int) -> list[_Row]:
    """Lock up to ``batch_size`` publishable rows, each aggregate's in sequence order."""
    with bound_cursor() as cursor:
        cursor.execute(_CLAIM_RETRY_HEADS, [batch_size])
        heads = _rows(cursor)
        if len(heads) < batch_size:
            cursor.execute(_CLAIM_NEW_HEADS, [batch_size - len(heads)])
            heads += _rows(cursor)
        room = batch_size - len(heads)
        if not heads or room <= 0:
            return heads
        cursor.execute(
            _CLAIM_FOLLOWERS,
            [[r.event.aggregate_id for r in heads], [r.id for r in heads], room],
        )
        followers = _rows(cursor)
    last = {r.event.aggregate_id: r.event.sequence for r in heads}
    claimed = list(heads)
    for row in followers:  # ordered by aggregate, sequence: keep each contiguous prefix
        aggregate = row.event.aggregate_id
        if last.get(aggregate) == row.event.sequence - 1:
            last[aggregate] = row.event.sequence
            claimed.append(row)
        else:
            last[aggregate] = -1  # a gap: the rest of this aggregate waits for a later pass
    claimed.sort(key=lambda r: r.id)
    return claimed


def backoff_seconds(attempts: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempts - 1))]."""
    return backoff.backoff_seconds(
        attempts, base=settings.OUTBOX_RETRY_BASE_SECONDS, cap=settings.OUTBOX_RETRY_MAX_SECONDS
    )


def _record_failure(row: _Row, error: str) -> bool:
    """Schedule ``row`` again or dead-letter it; returns True when it went dead."""
    attempts = row.attempts + 1
    now = timezone.now()
    fields: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000]}
    dead: bool = attempts >= settings.OUTBOX_MAX_ATTEMPTS
    if dead:
        fields |= {"state": OutboxMessage.State.DEAD, "dead_at": now, "next_attempt_at": None}
        logger.error("outbox message dead-lettered", extra={"event_id": row.event.event_id})
    else:
        fields["next_attempt_at"] = now + timedelta(seconds=backoff_seconds(attempts))
    OutboxMessage.objects.filter(pk=row.id).update(**fields)
    return dead


def _waves(rows: list[_Row], blocked: set[str]) -> Iterator[list[_Row]]:
    """Split id-ordered rows into waves holding at most one event per aggregate, each wave
    holding the next event of every aggregate; an aggregate added to ``blocked`` (its event
    was refused) gets nothing in later waves."""
    remaining = rows
    while remaining:
        wave: list[_Row] = []
        later: list[_Row] = []
        taken: set[str] = set()
        for row in remaining:
            aggregate = row.event.aggregate_id
            if aggregate in blocked:
                continue
            (later if aggregate in taken else wave).append(row)
            taken.add(aggregate)
        if wave:
            yield wave
        remaining = later


def outbox_relay_pass(*, batch_size: int | None = None, bus: EventBus | None = None) -> RelayResult:
    """Publish one batch of pending outbox rows; see the module docstring for the guarantees.

    Locks the claimed outbox rows (only those) for the length of the pass. Never raises for a
    broker failure: a refused message is recorded on its row (backoff, dead letter); an
    outage stops the pass, leaves the unpublished rows as they were (an outage is not their
    fault and never dead-letters them), notes the error on the first of them and reports
    ``bus_down``.
    """
    batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
    bus = bus or event_bus()
    published: list[_Row] = []
    failed = dead = 0
    bus_down = False
    with transaction.atomic():
        rows = _claim(batch_size)
        blocked: set[str] = set()
        for wave in _waves(rows, blocked):
            try:
                refusals = bus.publish_wave([row.event for row in wave])
            except BusUnavailable as exc:
                published += [row for i, row in enumerate(wave) if i in exc.published]
                unsent = [row for i, row in enumerate(wave) if i not in exc.published]
                if unsent:
                    OutboxMessage.objects.filter(pk=unsent[0].id).update(
                        last_error=f"event bus unavailable: {exc}"[:2000]
                    )
                bus_down = True
                break
            for row, refusal in zip(wave, refusals, strict=True):
                if refusal is None:
                    published.append(row)
                    continue
                logger.warning("event refused by the bus: %s", refusal)
                blocked.add(row.event.aggregate_id)
                failed += 1
                dead += _record_failure(row, str(refusal))
        if published:
            with connection.cursor() as cursor:
                cursor.execute(_MARK_PUBLISHED, [timezone.now(), sorted(r.id for r in published)])
    if bus_down:
        logger.warning("event bus unavailable; the relay backs off")
    return RelayResult(
        claimed=len(rows), published=len(published), failed=failed, dead=dead, bus_down=bus_down
    )


def outbox_relay_drain(
    *, batch_size: int | None = None, max_passes: int = 50, bus: EventBus | None = None
) -> RelayResult:
    """Run passes until a pass finds less than a full batch, the bus is down, or
    ``max_passes``; returns the totals."""
    batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
    totals = RelayResult(claimed=0, published=0, failed=0, dead=0, bus_down=False)
    for _ in range(max_passes):
        result = outbox_relay_pass(batch_size=batch_size, bus=bus)
        totals = RelayResult(
            claimed=totals.claimed + result.claimed,
            published=totals.published + result.published,
            failed=totals.failed + result.failed,
            dead=totals.dead + result.dead,
            bus_down=result.bus_down,
        )
        if result.bus_down or result.claimed < batch_size:
            break
    return totals


def outbox_relay_run() -> int:
    """What the relay task does: publish pending rows until none is due, backing off together
    with every other relay while the event bus is down.

    The first relay to find the bus down sets ``OUTAGE_KEY`` for a jittered, growing delay
    (``backoff_seconds`` of the consecutive outages, capped by
    ``OUTBOX_OUTAGE_MAX_BACKOFF_SECONDS``); kicks and sweeps skip their pass until it expires.
    Returns how many events were published.
    """
    redis = get_redis_connection("default")
    try:
        # One round trip: clear the kick (an event committed from now on kicks again) and
        # look for an outage backoff.
        pipe = redis.pipeline(transaction=False)
        pipe.delete(KICK_KEY)
        pipe.exists(OUTAGE_KEY)
        _cleared, backing_off = pipe.execute()
        if backing_off:
            return 0
    except RedisError:
        logger.warning("relay coordination in Redis failed; relaying anyway", exc_info=True)
    result = outbox_relay_drain()
    try:
        if result.bus_down:
            outages = redis.incr(OUTAGES_KEY)
            redis.expire(OUTAGES_KEY, 3600)
            delay = min(backoff_seconds(outages), settings.OUTBOX_OUTAGE_MAX_BACKOFF_SECONDS)
            redis.set(OUTAGE_KEY, "1", px=max(1, int(delay * 1000)))
            note_run_finished(KICK_KEY)
        else:
            # One round trip at the end too: the outages counted so far are over, and the
            # run's end is noted for busy kicks.
            pipe = redis.pipeline(transaction=False)
            pipe.delete(OUTAGES_KEY)
            note_run_finished(KICK_KEY, pipe=pipe)
            pipe.execute()
    except RedisError:
        logger.warning("could not record the end of the relay's run", exc_info=True)
    return result.published


def outbox_messages_requeue(*, ids: Sequence[int]) -> int:
    """Put dead-lettered rows back in the queue (staff action); returns how many moved.

    Rows that are not dead are left alone. The relay is kicked after commit.
    """
    with transaction.atomic():
        moved = OutboxMessage.objects.filter(
            pk__in=list(ids), state=OutboxMessage.State.DEAD
        ).update(
            state=OutboxMessage.State.PENDING,
            attempts=0,
            next_attempt_at=None,
            dead_at=None,
        )
        if moved:
            transaction.on_commit(kick_relay, robust=True)
    return moved


# A day's partitions are kept while any row in them is unpublished or was published within
# retention, or any mark is unapplied (each through its partial index).
_PARTITION_BUSY = """
SELECT EXISTS (SELECT 1 FROM {0} WHERE state <> 'published')
    OR EXISTS (SELECT 1 FROM {0} WHERE state = 'published' AND published_at >= %s)
    OR EXISTS (SELECT 1 FROM {1} WHERE applied_at IS NULL)
"""


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``outbox_prune`` removed: the partitions it dropped (outbox rows and marks, by
    name) and the rows it deleted from the default partition."""

    partitions: tuple[str, ...]
    default_rows: int


def outbox_prune(*, older_than: timedelta | None = None, chunk: int = 10_000) -> PruneResult:
    """Drop the outbox's day partitions (rows and consumer marks) that ended more than
    ``older_than`` (default ``OUTBOX_RETENTION_HOURS``) ago and hold only rows published
    before then and applied by every in-process consumer.

    Partitions are dropped, not emptied by DELETE (no dead tuples, no vacuum debt). A day with
    a row still pending or dead, or a mark unapplied, is kept whole until a later run finds it
    done. Rows that landed in the default partition (no day partition was made in time, see
    common/partitions.py) are deleted by the same rule, in chunks of ``chunk``."""
    if older_than is None:
        older_than = timedelta(hours=settings.OUTBOX_RETENTION_HOURS)
    cutoff = timezone.now() - older_than
    dropped = drop_partitions(OUTBOX, before=cutoff, busy_sql=_PARTITION_BUSY, params=[cutoff])
    return PruneResult(tuple(dropped), _prune_default(cutoff=cutoff, chunk=chunk))


def _prune_default(*, cutoff: datetime, chunk: int) -> int:
    """Delete what the default partition holds past retention, with its marks, by the rule of
    ``outbox_prune``: rows there are ones no day partition was made for in time."""
    default = connection.ops.quote_name(default_name(OUTBOX.table))
    marks = connection.ops.quote_name(default_name(OUTBOX.members[1][0]))
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {default} m WHERE state = 'published' AND published_at < %s "  # noqa: S608
                f"AND NOT EXISTS (SELECT 1 FROM {marks} c WHERE c.message_id = m.id "
                "AND c.applied_at IS NULL) LIMIT %s",
                [cutoff, chunk],
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return total
            # A published row stays published and an applied mark stays applied: no re-check.
            cursor.execute(f"DELETE FROM {marks} WHERE message_id = ANY(%s)", [ids])  # noqa: S608
            cursor.execute(f"DELETE FROM {default} WHERE id = ANY(%s)", [ids])  # noqa: S608
            total += cursor.rowcount
