"""The one fold: a payment's events, applied in sequence order, give its state.

Every event stores in ``data["changes"]`` the fields it set, and its ``to_status`` and
``sequence``; applying a payment's events in order therefore rebuilds the row's projected
state. Every projection reads that state from ``PaymentFold``: the payment row (``payment.py``),
its place in the merchant daily summary and the rebuild and verification of the read models
(``read_models.py``, ``verify.py``). None folds events by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol, TypeVar, cast

from ..eventstore import PROJECTED_FIELDS

# The fields a payment's events rebuild: the projected ones, its status and its version.
PAYMENT_FIELDS = (*PROJECTED_FIELDS, "status", "version")

# The merchant daily summary's values, in its columns' order.
SUMMARY_VALUES = (
    "payment_count",
    "amount",
    "amount_authorized",
    "amount_captured",
    "amount_refunded",
)
_MONEY = SUMMARY_VALUES[1:]

# (merchant id, UTC day of payment.initiated, status, currency)
SummaryKey = tuple[str, date, str, str]
# (payment_count, amount, amount_authorized, amount_captured, amount_refunded)
SummaryValues = tuple[int, int, int, int, int]
# Where one payment counts in the summary (its row's key, its share of the row), or nowhere.
Contribution = tuple[SummaryKey, SummaryValues] | None
SummaryTotals = dict[SummaryKey, list[int]]


class PaymentFold:
    """One payment's events folded in sequence order.

    ``state`` is the payment as its events describe it (``PAYMENT_FIELDS``, the fields set so
    far); ``gap`` the first missing sequence number, None while the sequence is 1, 2, 3, ...
    without a gap. ``advance`` folds one event; ``advance_place`` folds it and also returns
    the payment's place in the summary before and after it (the summary needs ``created_at``
    of the first event, ``payment.initiated``, which fixes the payment's day).
    """

    __slots__ = ("day", "gap", "merchant_id", "place", "state")

    def __init__(self, merchant_id: str = "") -> None:
        self.merchant_id = merchant_id
        self.state: dict[str, Any] = {}
        self.gap: int | None = None
        self.day: date | None = None
        self.place: Contribution = None

    def advance(self, *, sequence: int, to_status: str, changes: Mapping[str, Any]) -> None:
        """Fold one event into ``state``."""
        state = self.state
        version = state.get("version", 0)
        if self.gap is None and sequence != version + 1:
            self.gap = version + 1
        state.update(changes)
        state["status"] = to_status
        state["version"] = sequence

    def advance_place(
        self,
        *,
        sequence: int,
        to_status: str,
        changes: Mapping[str, Any],
        created_at: datetime,
    ) -> tuple[Contribution, Contribution]:
        """Fold one event; returns the payment's place in the summary before and after it."""
        if self.day is None:
            self.day = created_at.astimezone(UTC).date()
        self.advance(sequence=sequence, to_status=to_status, changes=changes)
        state = self.state
        before = self.place
        key = (self.merchant_id, self.day, state["status"], str(state.get("currency", "")))
        amount, authorized, captured, refunded = (int(state.get(name) or 0) for name in _MONEY)
        self.place = (key, (1, amount, authorized, captured, refunded))
        return before, self.place


class FoldRow(Protocol):
    """One event as ``folded`` needs it (``read_models.EventRow`` is one)."""

    @property
    def payment_id(self) -> str: ...
    @property
    def merchant_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def to_status(self) -> str: ...
    @property
    def changes(self) -> Mapping[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...


Row = TypeVar("Row", bound=FoldRow)


def folded(rows: Iterable[Row]) -> Iterator[tuple[Row, PaymentFold, Contribution, Contribution]]:
    """Fold a stream of events ordered by payment, then sequence: one ``PaymentFold`` per
    payment. Yields each row with its payment's fold (a new object when a new payment starts)
    and the payment's place in the summary before and after the row. Holds one payment."""
    fold = PaymentFold()
    current = ""
    for row in rows:
        if row.payment_id != current:
            current = row.payment_id
            fold = PaymentFold(row.merchant_id)
        before, after = fold.advance_place(
            sequence=row.sequence,
            to_status=row.to_status,
            changes=row.changes,
            created_at=row.created_at,
        )
        yield row, fold, before, after


def replay_state(
    rows: Iterable[tuple[int, str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], int | None]:
    """Fold (sequence, to_status, changes) rows, oldest first, into a payment's projected state.

    Returns the state and the first missing sequence number (None when the sequence is
    1, 2, 3, ... without a gap), so a streaming verifier can report a gap instead of stopping.
    """
    fold = PaymentFold()
    for sequence, to_status, changes in rows:
        fold.advance(sequence=sequence, to_status=to_status, changes=changes)
    return fold.state, fold.gap


def add_delta(totals: SummaryTotals, before: Contribution, after: Contribution) -> None:
    """Move one payment in ``totals`` from its place ``before`` to ``after``."""
    if before == after:
        return
    if before is not None:
        row = totals.setdefault(before[0], [0, 0, 0, 0, 0])
        for index, value in enumerate(before[1]):
            row[index] -= value
    if after is not None:
        row = totals.setdefault(after[0], [0, 0, 0, 0, 0])
        for index, value in enumerate(after[1]):
            row[index] += value


def nonzero(totals: Mapping[SummaryKey, Sequence[int]]) -> dict[SummaryKey, SummaryValues]:
    """Rows that say something: an all-zero row means the same as no row."""
    # Every row holds the five SUMMARY_VALUES (the summary table's columns, add_delta's rows).
    return {
        key: cast("SummaryValues", tuple(values)) for key, values in totals.items() if any(values)
    }
