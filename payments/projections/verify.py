"""Rebuild every projection from the event table, compare it with what is stored, repair it.

The projections are the payment row (its projected fields, ``status`` and ``version``), the
merchant daily summary and the audit trail (``read_models.py``), all read from the one fold
(``fold.PaymentFold``). Events are the truth and are only ever read here.

How a run goes (``events_replay``):

1. **Scan**, in one transaction. The events are streamed through a server-side cursor ordered
   by (payment, sequence) and grouped on the fly: each payment is replayed and compared with
   its stored row in batches, and its applied events are folded into the expected summary.
   Memory holds one chunk of events, one batch of payments and the summary rows of the scope,
   never the event table. The audit trail is compared by one streamed SQL join, the summary
   at the end. Without ``repair`` the transaction is ``REPEATABLE READ READ ONLY``: a relay
   committing meanwhile cannot make events and read models look inconsistent (it marks events
   published and applies them in one transaction). With ``repair`` the read models' advisory
   lock is taken exclusively *before* the snapshot, so the relay's apply waits and the read
   models are repaired against the very state they were compared with.
2. **Payments** found different are checked again one by one in a short transaction of their
   own (with ``repair``: under the payment's row lock, ``Payment.objects.locked()``, the lock
   every write to a payment takes), and only
   then reported and repaired: a payment that moved on during the scan is not mistaken for a
   tampered one, and no payment row stays locked for the length of a scan.

Scope. ``payment_id`` or ``since`` restrict the payments compared (those with an event at or
after ``since``) and their audit rows. A summary row sums over every payment of its merchant
and day, so the summary is compared for each (merchant, day) that a payment in scope belongs
to, over all the payments of that merchant and day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection, reset_queries, transaction
from django.utils.dateparse import parse_datetime

from ..models import MerchantDailySummary, Payment, PaymentEvent
from .fold import (
    PAYMENT_FIELDS,
    SUMMARY_VALUES,
    PaymentFold,
    SummaryKey,
    SummaryTotals,
    add_delta,
    folded,
    nonzero,
    replay_state,
)
from .payment import stored_state
from .read_models import (
    APPLIED_SQL,
    AUDIT_COLUMNS,
    AUDIT_FIELDS,
    AUDIT_SELECT,
    READ_MODELS_LOCK,
    event_rows,
    lock_exclusive,
    summary_delete,
    summary_write,
)


@dataclass(frozen=True, slots=True)
class Difference:
    """One value where a stored projection and the replay of the events disagree.

    ``model`` is ``payment`` (key: payment id), ``summary`` (key: merchant/day/status/currency)
    or ``audit`` (key: event id); ``expected`` is what the events say.
    """

    model: str
    key: str
    field: str
    stored: Any
    expected: Any
    repairable: bool = True

    def __str__(self) -> str:
        return (
            f"{self.model} {self.key} {self.field}: "
            f"stored {self.stored!r}, replayed {self.expected!r}"
        )


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Where a running replay is."""

    events: int
    payments: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second so far."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class ReplayReport:
    """What a replay did. ``unrepaired`` differences make ``replay_events`` exit non-zero."""

    events: int = 0
    payments: int = 0
    seconds: float = 0.0
    differences: int = 0
    repaired: int = 0
    by_model: dict[str, int] = field(default_factory=dict)

    @property
    def unrepaired(self) -> int:
        return self.differences - self.repaired

    @property
    def rate(self) -> float:
        """Events per second over the whole run."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ReplayScope:
    """All payments, one payment, or the payments with an event at or after ``since``."""

    payment_id: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        if self.payment_id is not None and self.since is not None:
            raise ValueError("give a payment or a since time, not both")

    @property
    def whole(self) -> bool:
        return self.payment_id is None and self.since is None

    def sql(self, column: str) -> str:
        """A condition on ``column`` (a payment id) that is true for payments in scope."""
        if self.payment_id is not None:
            return f"{column} = %s"
        if self.since is not None:
            return (
                f"EXISTS (SELECT 1 FROM payments_paymentevent s "  # noqa: S608 - own SQL; values in params
                f"WHERE s.payment_id = {column} AND s.created_at >= %s)"
            )
        return "TRUE"

    def params(self) -> list[Any]:
        """The values of one ``sql()`` fragment (positional: pgtrigger's ignore, which the
        tests use, prepends a positional parameter, so named ones cannot be used)."""
        if self.payment_id is not None:
            return [self.payment_id]
        if self.since is not None:
            return [self.since]
        return []


def events_replay(
    *,
    payment_id: str | None = None,
    since: datetime | None = None,
    repair: bool = False,
    batch_size: int = 1000,
    on_difference: Callable[[Difference], None] | None = None,
    on_progress: Callable[[ReplayProgress], None] | None = None,
    progress_every: int = 100_000,
) -> ReplayReport:
    """Replay the events of the scope, compare every projection, and with ``repair`` fix them.

    ``batch_size`` is how many payments are compared per query (and how many events are
    fetched per round trip, times ten). ``on_difference`` receives each difference as it is
    confirmed; ``on_progress`` every ``progress_every`` events. Raises ``ValueError`` for a bad
    argument. Writes only projections (payment rows, summary rows, audit rows), never events.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    scope = ReplayScope(payment_id=payment_id, since=since)
    report = ReplayReport()
    started = time.monotonic()

    def found(difference: Difference, *, repaired: bool) -> None:
        report.differences += 1
        report.repaired += repaired
        report.by_model[difference.model] = report.by_model.get(difference.model, 0) + 1
        if on_difference is not None:
            on_difference(difference)

    with _scan_transaction(repair=repair):
        scan = _Scan(scope, batch_size=batch_size, report=report, started=started)
        candidates = scan.run(on_progress=on_progress, progress_every=progress_every)
        for difference in _audit_differences(scope, repair=repair, chunk_size=batch_size):
            found(difference, repaired=repair)
        for difference in _summary_differences(scan.totals, scan.pairs, repair=repair):
            found(difference, repaired=repair)
    for candidate in candidates:
        for difference in payment_verify(candidate, repair=repair):
            found(difference, repaired=repair and difference.repairable)
    report.seconds = time.monotonic() - started
    return report


@contextmanager
def _scan_transaction(*, repair: bool) -> Iterator[None]:
    """The scan's transaction: a consistent snapshot, and with ``repair`` the relay held off.

    PostgreSQL takes a REPEATABLE READ snapshot at the first statement, before that statement
    waits for a lock; so for a repair the exclusive advisory lock is taken first on the session
    and released after the commit. Inside a caller's transaction (tests) its snapshot is used.
    """
    if connection.in_atomic_block:
        with transaction.atomic():
            if repair:
                lock_exclusive()
            yield
        return
    if repair:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [READ_MODELS_LOCK])
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"
                    + ("" if repair else " READ ONLY")
                )
            yield
    finally:
        if repair:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [READ_MODELS_LOCK])


# --- the payment projection ---


def _compare(
    payment_id: str, stored: Mapping[str, Any], replayed: Mapping[str, Any]
) -> list[Difference]:
    return [
        Difference("payment", payment_id, name, stored.get(name), replayed.get(name))
        for name in PAYMENT_FIELDS
        if stored.get(name) != replayed.get(name)
    ]


def payment_verify(payment_id: str, *, repair: bool) -> list[Difference]:
    """Compare one payment with the replay of its events, in a transaction of its own, and with
    ``repair`` write the replayed projection back.

    With ``repair`` the payment row is locked (``Payment.objects.locked()``, as every write to a
    payment locks it), so no event can be appended between the replay and the write. The write
    is a queryset ``update()`` of the projected fields, ``status`` and ``version``: the one
    sanctioned exception to "only the event store writes status" (``status`` is a protected
    FSMField, and a repair must restore what the events say without running a transition or
    adding an event). A payment without events, or with a gap in its sequence, is reported and
    not repaired.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and not repair:  # payment and events read from one snapshot
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        payments = Payment.objects.filter(pk=payment_id)
        if repair:
            payments = payments.locked()
        values = payments.values("id", *PAYMENT_FIELDS).first()
        if values is None:
            return []
        stored = stored_state(values)
        events = PaymentEvent.objects.filter(payment_id=payment_id).order_by("sequence")
        replayed, gap = replay_state(
            (seq, status, data.get("changes", {}))
            for seq, status, data in events.values_list("sequence", "to_status", "data")
        )
        if not replayed:
            return [Difference("payment", payment_id, "events", stored["version"], None, False)]
        if gap is not None:
            return [
                Difference("payment", payment_id, "events", "missing", f"sequence {gap}", False)
            ]
        differences = _compare(payment_id, stored, replayed)
        if repair and differences:
            fields = {d.field: d.expected for d in differences}
            if fields.get("authorization_expires_at"):
                fields["authorization_expires_at"] = parse_datetime(
                    fields["authorization_expires_at"]
                )
            Payment.objects.filter(pk=payment_id).update(**fields)
        return differences


# --- the scan ---


class _Scan:
    """One streamed pass over the events of the scope (see the module docstring)."""

    def __init__(
        self, scope: ReplayScope, *, batch_size: int, report: ReplayReport, started: float
    ) -> None:
        self.scope = scope
        self.batch_size = batch_size
        self.report = report
        self.started = started
        self.totals: SummaryTotals = {}
        self.pairs: list[tuple[str, date]] | None = None if scope.whole else self._pairs()
        self.batch: dict[str, dict[str, Any]] = {}
        self.candidates: list[str] = []

    def _pairs(self) -> list[tuple[str, date]]:
        """The (merchant, UTC day) of every payment in scope: the summary rows to compare."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT p.merchant_id, (e.created_at AT TIME ZONE 'UTC')::date "  # noqa: S608 - own SQL; values in params
                "FROM payments_paymentevent e JOIN payments_payment p ON p.id = e.payment_id "
                f"WHERE e.sequence = 1 AND {self.scope.sql('e.payment_id')} "
                "ORDER BY 1, 2",
                self.scope.params(),
            )
            return [(merchant, day) for merchant, day in cursor.fetchall()]

    def _stream(self) -> Iterator[Any]:
        if self.pairs is None:
            return event_rows(chunk_size=self.batch_size * 10)
        # Every payment of the scope's (merchant, day) pairs; payments.created_at is indexed
        # per merchant and lies within moments of the initiated event, so it narrows the scan.
        where = (
            "e.payment_id IN (SELECT f.payment_id FROM payments_paymentevent f "  # noqa: S608 - own SQL; values in params
            "JOIN payments_payment q ON q.id = f.payment_id "
            "JOIN unnest(%s::varchar[], %s::date[]) AS k(merchant_id, day) "
            "ON q.merchant_id = k.merchant_id "
            "AND q.created_at >= (k.day - 1)::timestamp AT TIME ZONE 'UTC' "
            "AND q.created_at < (k.day + 2)::timestamp AT TIME ZONE 'UTC' "
            "WHERE f.sequence = 1 AND (f.created_at AT TIME ZONE 'UTC')::date = k.day) "
            f"OR {self.scope.sql('e.payment_id')}"
        )
        params = [  # in the order of the placeholders: in_scope, then where
            *self.scope.params(),
            [merchant for merchant, _ in self.pairs],
            [day for _, day in self.pairs],
            *self.scope.params(),
        ]
        return event_rows(
            where=where,
            in_scope=self.scope.sql("e.payment_id"),
            params=params,
            chunk_size=self.batch_size * 10,
        )

    def run(
        self, *, on_progress: Callable[[ReplayProgress], None] | None, progress_every: int
    ) -> list[str]:
        """Stream, fold and compare; returns the payments that differed (to verify again)."""
        report = self.report
        previous: tuple[str, PaymentFold] | None = None
        next_progress = progress_every
        for row, fold, before, after in folded(self._stream()):
            if previous is None or previous[1] is not fold:  # a new payment starts
                if previous is not None and previous[0]:
                    self._done(*previous)
                previous = (row.payment_id if row.in_scope else "", fold)
                report.payments += row.in_scope
            if row.applied:
                add_delta(self.totals, before, after)
            report.events += 1
            if report.events >= next_progress:
                next_progress += progress_every
                if on_progress is not None:
                    on_progress(
                        ReplayProgress(
                            report.events, report.payments, time.monotonic() - self.started
                        )
                    )
        if previous is not None and previous[0]:
            self._done(*previous)
        self._flush()
        self.candidates.extend(self._payments_without_events())
        return self.candidates

    def _done(self, payment_id: str, fold: PaymentFold) -> None:
        if fold.gap is not None:
            self.candidates.append(payment_id)
            return
        self.batch[payment_id] = fold.state
        if len(self.batch) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        """Compare a batch of replayed payments with their stored rows (one query)."""
        if not self.batch:
            return
        stored = Payment.objects.filter(pk__in=list(self.batch)).values("id", *PAYMENT_FIELDS)
        for values in stored:
            if _compare(values["id"], stored_state(values), self.batch[values["id"]]):
                self.candidates.append(values["id"])
        self.batch.clear()
        # Under DEBUG Django keeps the last 9,000 queries with their parameters (here a
        # thousand ids each): forget them, or a long scan's memory grows with its length.
        reset_queries()

    def _payments_without_events(self) -> list[str]:
        """Payment rows that no event supports (only possible by tampering)."""
        if self.scope.since is not None:
            return []  # such a payment has no event since anything: out of scope
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT p.id FROM payments_payment p WHERE "  # noqa: S608 - own SQL; values in params
                "NOT EXISTS (SELECT 1 FROM payments_paymentevent e WHERE e.payment_id = p.id) "
                f"AND {self.scope.sql('p.id')} ORDER BY p.id",
                self.scope.params(),
            )
            return [payment_id for (payment_id,) in cursor.fetchall()]


# --- the audit trail ---

_AUDIT_DIFF = """
SELECT e.id, a.event_id, e.applied,
       e.merchant_id, e.payment_id, e.sequence, e.type, e.from_status, e.to_status, e.actor,
       e.correlation_id, e.created_at,
       a.merchant_id, a.payment_id, a.sequence, a.type, a.from_status, a.to_status, a.actor,
       a.correlation_id, a.created_at
FROM (
    SELECT e.id, p.merchant_id, e.payment_id, e.sequence, e.type, e.from_status, e.to_status,
           e.actor, e.correlation_id, e.created_at, {applied} AS applied
    FROM payments_paymentevent e JOIN payments_payment p ON p.id = e.payment_id
    WHERE {event_scope}
) e
FULL OUTER JOIN (
    SELECT * FROM payments_paymentauditentry a WHERE {audit_scope}
) a ON a.event_id = e.id
WHERE e.id IS NULL
   OR (e.applied AND a.event_id IS NULL)
   OR (NOT e.applied AND a.event_id IS NOT NULL)
   OR (e.applied AND (a.merchant_id, a.payment_id, a.sequence, a.type, a.from_status,
                      a.to_status, a.actor, a.correlation_id, a.created_at)
       IS DISTINCT FROM (e.merchant_id, e.payment_id, e.sequence, e.type, e.from_status,
                         e.to_status, e.actor, e.correlation_id, e.created_at))
ORDER BY COALESCE(e.id, a.event_id)
"""

_AUDIT_SET = ", ".join(f"{n} = EXCLUDED.{n}" for n in AUDIT_FIELDS)
_AUDIT_UPSERT = f"""
INSERT INTO payments_paymentauditentry ({AUDIT_COLUMNS})
{AUDIT_SELECT}
WHERE e.id = ANY(%s)
ORDER BY e.id
ON CONFLICT (event_id, created_at) DO UPDATE SET {_AUDIT_SET}
"""
# The unique key is (event_id, created_at) (the table is partitioned by created_at): a row
# whose time is not its event's would not conflict with its fix, so it goes first.
_AUDIT_WRONG_TIME = """
DELETE FROM payments_paymentauditentry a USING payments_paymentevent e
WHERE a.event_id = ANY(%s) AND e.id = a.event_id AND a.created_at <> e.created_at
"""


def _audit_differences(
    scope: ReplayScope, *, repair: bool, chunk_size: int
) -> Iterator[Difference]:
    """Audit rows missing, extra, or unlike their event; streamed from one SQL join (the
    database compares, Python sees only differences). With ``repair``, missing and unlike rows
    are written from their events and extra rows deleted, a chunk at a time."""
    sql = _AUDIT_DIFF.format(
        applied=APPLIED_SQL,
        event_scope=scope.sql("e.payment_id"),
        audit_scope=scope.sql("a.payment_id"),
    )
    width = len(AUDIT_FIELDS)
    upserts: list[str] = []
    deletes: list[str] = []
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, [*scope.params(), *scope.params()])
        while chunk := cursor.fetchmany(chunk_size):
            for row in chunk:
                event_id, audit_id, applied = row[0], row[1], row[2]
                expected = dict(zip(AUDIT_FIELDS, row[3 : 3 + width], strict=True))
                stored = dict(zip(AUDIT_FIELDS, row[3 + width :], strict=True))
                if event_id is None or not applied:
                    deletes.append(audit_id)
                    yield Difference("audit", audit_id, "row", "present", None)
                elif audit_id is None:
                    upserts.append(event_id)
                    yield Difference("audit", event_id, "row", None, "present")
                else:
                    upserts.append(event_id)
                    for name in AUDIT_FIELDS:
                        if stored[name] != expected[name]:
                            yield Difference("audit", event_id, name, stored[name], expected[name])
            if repair:
                _audit_repair(upserts, deletes)
            upserts, deletes = [], []


def _audit_repair(upserts: list[str], deletes: list[str]) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        if deletes:
            cursor.execute(
                "DELETE FROM payments_paymentauditentry WHERE event_id = ANY(%s)", [deletes]
            )
        if upserts:
            cursor.execute(_AUDIT_WRONG_TIME, [upserts])
            cursor.execute(_AUDIT_UPSERT, [upserts])


# --- the summary ---


def summary_key_text(key: SummaryKey) -> str:
    merchant, day, status, currency = key
    return f"{merchant}/{day.isoformat()}/{status}/{currency}"


def _summary_differences(
    totals: SummaryTotals, pairs: list[tuple[str, date]] | None, *, repair: bool
) -> list[Difference]:
    """Compare the folded summary with the stored rows (all, or those of ``pairs``)."""
    rows = MerchantDailySummary.objects.all()
    stored_rows = rows.values_list("merchant_id", "day", "status", "currency", *SUMMARY_VALUES)
    read: dict[SummaryKey, tuple[int, ...]] = {}
    wanted = None if pairs is None else set(pairs)
    for merchant, day, status, currency, *values in stored_rows.iterator(chunk_size=2000):
        if wanted is None or (merchant, day) in wanted:
            read[(merchant, day, status, currency)] = tuple(values)
    stored = nonzero(read)
    expected = nonzero(totals)
    zeros = (0,) * len(SUMMARY_VALUES)
    differences: list[Difference] = []
    rewrite: dict[SummaryKey, tuple[int, ...]] = {}
    remove = []
    for key in sorted(set(stored) | set(expected)):
        have, want = stored.get(key, zeros), expected.get(key, zeros)
        if have == want:
            continue
        if key in expected:
            rewrite[key] = want
        else:
            remove.append(key)
        differences.extend(
            Difference("summary", summary_key_text(key), name, a, b)
            for name, a, b in zip(SUMMARY_VALUES, have, want, strict=True)
            if a != b
        )
    if repair:
        summary_write(rewrite, absolute=True)
        summary_delete(remove)
    return differences


def parse_since(value: str) -> datetime:
    """An ISO date (midnight UTC) or datetime (UTC when it names no zone); ``ValueError``
    otherwise."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day)
    except ValueError as exc:
        raise ValueError(f"not an ISO date or datetime: {value!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
