"""The read models fed by the outbox: the merchant daily summary and the audit trail.

``read_models_apply`` is the in-process outbox consumer ``read_models`` (registered in
``PaymentsConfig.ready``): the consumer pass (``outbox/consumers.py``) reads the outbox itself,
independently of the relay and the event bus, and calls it with each event once, in per-payment
order, in the transaction that marks the event applied for this consumer. The read models
record what they applied in a table of their own, ``ReadModelAppliedEvent`` (one row per event,
the event id unique), in that same transaction: an event counts as applied exactly when it has
that row (``APPLIED_SQL``), whatever the outbox did with it or pruned since. The one fold
(``fold.PaymentFold``) serves the incremental path and the rebuild from the event table
(``read_models_rebuild``, ``summary_expected``), so both give the same rows by construction.

The summary is kept as deltas: when an event moves a payment from one (status, amounts) to
another, its old row loses the payment and its new row gains it. The deltas of a payment's
applied events add up to its place after the last of them, whatever order they were applied
in. An event's applied row is inserted first, ``ON CONFLICT DO NOTHING ... RETURNING``, and
only events that really got a new one get an audit row and move the summary: a batch delivered
twice changes nothing the second time.

Concurrency. Two consumer passes apply disjoint batches at once; each upserts its summary rows
in one statement in a fixed key order, so they cannot deadlock on those rows. ``replay_events
--repair`` and ``read_models_rebuild`` take ``READ_MODELS_LOCK`` exclusively; apply takes it
shared, so a repair never computes from a state a consumer pass is changing under it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection, transaction

from outbox.types import OutboxEvent

from .fold import (
    SUMMARY_VALUES,
    SummaryKey,
    SummaryTotals,
    add_delta,
    folded,
    nonzero,
)

logger = logging.getLogger(__name__)

# The name of this module's outbox consumer, and of its "applied" marks.
READ_MODELS_CONSUMER = "read_models"

# The advisory lock (one bigint key) that orders read-model repairs against the consumer.
READ_MODELS_LOCK = 0x6165_6769_7301  # "aegis" + 1; any constant unique to this purpose

AUDIT_FIELDS = (
    "merchant_id",
    "payment_id",
    "sequence",
    "type",
    "from_status",
    "to_status",
    "actor",
    "correlation_id",
    "created_at",
)

# "Applied" in SQL: the read models recorded the event ``e`` as applied in their own table
# (ReadModelAppliedEvent). Neither the relay nor the outbox's consumer marks have a say.
APPLIED_SQL = "EXISTS (SELECT 1 FROM payments_readmodelappliedevent r WHERE r.event_id = e.id)"


def lock_shared() -> None:
    """Take ``READ_MODELS_LOCK`` shared until the transaction ends (apply: passes coexist)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [READ_MODELS_LOCK])


def lock_exclusive() -> None:
    """Take ``READ_MODELS_LOCK`` exclusively until the transaction ends (repair, rebuild)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [READ_MODELS_LOCK])


# --- the event stream both the rebuild and replay_events read ---


class EventRow(NamedTuple):
    """One event as the folds need it; ``in_scope`` is the caller's own filter flag."""

    payment_id: str
    merchant_id: str
    event_id: str
    sequence: int
    to_status: str
    changes: dict[str, Any]
    created_at: datetime
    applied: bool
    in_scope: bool


def event_rows(
    *,
    where: str = "TRUE",
    in_scope: str = "TRUE",
    params: Sequence[Any] = (),
    chunk_size: int = 5000,
) -> Iterator[EventRow]:
    """Stream events ordered by (payment, sequence) through a server-side cursor.

    Memory stays at one chunk whatever the table size. ``where`` and ``in_scope`` are SQL
    fragments over ``e`` (the event) and ``p`` (its payment), written by this project's code
    only; values go in ``params``, positional (``%s``), those of ``in_scope`` first.
    """
    sql = (
        "SELECT e.payment_id, p.merchant_id, e.id, e.sequence, e.to_status, "  # noqa: S608 - own SQL; values in params
        f"e.data -> 'changes', e.created_at, {APPLIED_SQL}, ({in_scope}) "
        "FROM payments_paymentevent e JOIN payments_payment p ON p.id = e.payment_id "
        f"WHERE {where} ORDER BY e.payment_id, e.sequence"
    )
    loads = json.loads
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, list(params))
        while True:
            chunk = cursor.fetchmany(chunk_size)
            if not chunk:
                return
            for (
                payment_id,
                merchant_id,
                event_id,
                seq,
                to_status,
                changes,
                at,
                applied,
                scope,
            ) in chunk:
                if isinstance(changes, str):
                    changes = loads(changes)
                yield EventRow(
                    payment_id,
                    merchant_id,
                    event_id,
                    seq,
                    to_status,
                    changes or {},
                    at,
                    applied,
                    scope,
                )


def summary_expected(rows: Iterable[EventRow]) -> SummaryTotals:
    """The summary that the applied events among ``rows`` describe (rows as ``event_rows``
    yields them: ordered by payment, then sequence). Streams: holds one payment at a time."""
    totals: SummaryTotals = {}
    for row, _fold, before, after in folded(rows):
        if row.applied:
            add_delta(totals, before, after)
    return totals


# --- writing the summary ---

_SUMMARY_UPSERT = """
INSERT INTO payments_merchantdailysummary AS s (
    merchant_id, day, status, currency,
    payment_count, amount, amount_authorized, amount_captured, amount_refunded, updated_at)
SELECT d.merchant_id, d.day, d.status, d.currency,
       d.payment_count, d.amount, d.amount_authorized, d.amount_captured, d.amount_refunded, now()
FROM unnest(%s::varchar[], %s::date[], %s::varchar[], %s::varchar[],
            %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
     WITH ORDINALITY AS d(merchant_id, day, status, currency, payment_count, amount,
                          amount_authorized, amount_captured, amount_refunded, n)
ORDER BY d.n
ON CONFLICT (merchant_id, day, status, currency) DO UPDATE SET {assignments}, updated_at = now()
"""
_ADD = ", ".join(f"{name} = s.{name} + EXCLUDED.{name}" for name in SUMMARY_VALUES)
_SET = ", ".join(f"{name} = EXCLUDED.{name}" for name in SUMMARY_VALUES)


def summary_write(rows: Mapping[SummaryKey, Sequence[int]], *, absolute: bool) -> None:
    """Upsert summary rows in one statement, in key order (two relays cannot deadlock).

    ``absolute=False`` adds the values to what is stored (apply's deltas); ``absolute=True``
    replaces them (repair, rebuild).
    """
    if not rows:
        return
    keys = sorted(rows)
    columns: list[list[Any]] = [[key[i] for key in keys] for i in range(4)]
    columns += [[rows[key][i] for key in keys] for i in range(len(SUMMARY_VALUES))]
    sql = _SUMMARY_UPSERT.format(assignments=_SET if absolute else _ADD)
    with connection.cursor() as cursor:
        cursor.execute(sql, columns)


def summary_delete(keys: Iterable[SummaryKey]) -> None:
    """Delete summary rows by key (repair: rows the events do not support)."""
    keys = sorted(keys)
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM payments_merchantdailysummary s USING unnest("
            "%s::varchar[], %s::date[], %s::varchar[], %s::varchar[]) AS k(m, d, st, c) "
            "WHERE s.merchant_id = k.m AND s.day = k.d AND s.status = k.st AND s.currency = k.c",
            [[key[i] for key in keys] for i in range(4)],
        )


# --- the outbox consumer ---

AUDIT_COLUMNS = (
    "event_id, merchant_id, payment_id, sequence, type, from_status, to_status, actor, "
    "correlation_id, created_at"
)
AUDIT_SELECT = (
    "SELECT e.id, p.merchant_id, e.payment_id, e.sequence, e.type, e.from_status, "
    "e.to_status, e.actor, e.correlation_id, e.created_at "
    "FROM payments_paymentevent e JOIN payments_payment p ON p.id = e.payment_id"
)
# The events of the batch not applied before: recorded as applied now, in event id order (two
# passes never wait on each other in opposite orders).
_APPLIED_INSERT = """
INSERT INTO payments_readmodelappliedevent (event_id, applied_at)
SELECT b.event_id, now() FROM unnest(%s::varchar[]) AS b(event_id)
ORDER BY b.event_id
ON CONFLICT DO NOTHING
RETURNING event_id
"""
_AUDIT_INSERT = f"""
INSERT INTO payments_paymentauditentry ({AUDIT_COLUMNS})
{AUDIT_SELECT}
WHERE e.id = ANY(%s)
ORDER BY e.payment_id, e.sequence
ON CONFLICT DO NOTHING
"""
# Each batch payment's events up to the last one in the batch: the state before each of them.
_HISTORY = """
SELECT e.payment_id, p.merchant_id, e.id, e.sequence, e.to_status, e.data -> 'changes',
       e.created_at
FROM payments_paymentevent e
JOIN payments_payment p ON p.id = e.payment_id
JOIN unnest(%s::varchar[], %s::int[]) AS b(payment_id, last_sequence)
  ON e.payment_id = b.payment_id AND e.sequence <= b.last_sequence
ORDER BY e.payment_id, e.sequence
"""


def read_models_apply(events: list[OutboxEvent]) -> None:
    """Fold a batch of events into the summary and the audit trail.

    Called by the outbox consumer pass inside the transaction that marks ``events`` applied,
    each payment's events in sequence order (any transaction works: it opens one if there is
    none). Five statements whatever the batch size: the shared advisory lock, the applied
    record, the audit insert, the batch payments' event history, one summary upsert.
    Idempotent per event: an event recorded as applied already changes nothing. Events of
    other aggregates are ignored. Locks only the summary rows it changes.
    """
    batch = [event for event in events if event.aggregate_type == "payment"]
    if not batch:
        return
    last: dict[str, int] = {}
    for event in batch:
        last[event.aggregate_id] = max(last.get(event.aggregate_id, 0), event.sequence)
    with transaction.atomic(), connection.cursor() as cursor:
        lock_shared()
        cursor.execute(_APPLIED_INSERT, [sorted(event.event_id for event in batch)])
        fresh = {row[0] for row in cursor.fetchall()}
        if not fresh:
            return  # all of them were applied before
        cursor.execute(_AUDIT_INSERT, [sorted(fresh)])
        payments = sorted(last)
        cursor.execute(_HISTORY, [payments, [last[p] for p in payments]])
        history = [
            EventRow(
                payment_id,
                merchant_id,
                event_id,
                sequence,
                to_status,
                (json.loads(changes) if isinstance(changes, str) else changes) or {},
                created_at,
                event_id in fresh,  # applied by this call: its delta counts
                True,
            )
            for (
                payment_id,
                merchant_id,
                event_id,
                sequence,
                to_status,
                changes,
                created_at,
            ) in cursor.fetchall()
        ]
        totals = summary_expected(history)
        seen = sum(row.applied for row in history)
        if seen != len(fresh):  # cannot happen: the events were read in the same transaction
            logger.error("read models: %d applied events not found", len(fresh) - seen)
        summary_write(nonzero(totals), absolute=False)


# --- rebuilding from scratch ---


@dataclass(frozen=True, slots=True)
class RebuildResult:
    """What ``read_models_rebuild`` wrote."""

    audit_rows: int
    summary_rows: int


def read_models_rebuild(*, chunk_size: int = 5000) -> RebuildResult:
    """Throw both read models away and compute them again from the events they applied.

    What they applied (``ReadModelAppliedEvent``) is kept: it is their record of what the
    consumer handed them, which the events alone cannot tell. Holds ``READ_MODELS_LOCK``
    exclusively for its one transaction (the consumer's apply waits), so the events it counts
    as applied cannot change under it. The audit trail is one
    ``INSERT ... SELECT``; the summary is folded from a streamed read of the events, so memory
    holds one payment plus the summary rows. Events are only read.
    """
    with transaction.atomic():
        lock_exclusive()
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM payments_merchantdailysummary")
            cursor.execute("DELETE FROM payments_paymentauditentry")
            cursor.execute(
                f"INSERT INTO payments_paymentauditentry ({AUDIT_COLUMNS}) "
                f"{AUDIT_SELECT} WHERE {APPLIED_SQL}"
            )
            audit_rows = cursor.rowcount
        rows = nonzero(summary_expected(event_rows(chunk_size=chunk_size)))
        summary_write(rows, absolute=True)
    return RebuildResult(audit_rows=audit_rows, summary_rows=len(rows))
