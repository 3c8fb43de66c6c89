"""Reads of the outbox: what each in-process consumer has applied, and the relay's backlog and
publication lag for staff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
)
from django.utils import timezone

from .models import OutboxConsumerMark, OutboxMessage
from .registry import valid_consumer_name

HOUR = timedelta(hours=1)


def consumer_applied_sql(*, consumer: str, event_id: str) -> str:
    """A SQL condition, true when the event whose id is the SQL expression ``event_id`` has
    been applied by the in-process consumer ``consumer``: it has no unapplied mark for it.

    An event without a mark counts as applied: its mark was deleted with its outbox row, which
    is pruned only after every consumer applied it (or it predates the marks, whose migration
    marked every row the relay had handed over). ``event_id`` is SQL written by the caller's
    code, never a value.
    """
    if not valid_consumer_name(consumer):
        raise ValueError(f"not a consumer name: {consumer!r}")
    table = OutboxConsumerMark._meta.db_table
    return (
        f"NOT EXISTS (SELECT 1 FROM {table} c WHERE c.consumer = '{consumer}' "  # noqa: S608 - checked name
        f"AND c.event_id = {event_id} AND c.applied_at IS NULL)"
    )


def consumer_unapplied_count(*, consumer: str) -> int:
    """How many events ``consumer`` has not applied yet (staff, tests)."""
    return OutboxConsumerMark.objects.filter(consumer=consumer, applied_at__isnull=True).count()


class _PercentileCont(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be in [0, 1]")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """The rows the relay has not published: ``pending`` ones (the oldest created at
    ``oldest_pending_at``) and ``dead`` ones, refused too often, waiting for staff."""

    pending: int
    dead: int
    oldest_pending_at: datetime | None


def outbox_backlog() -> OutboxBacklog:
    """The backlog in one query over unpublished rows only (the partial index
    ``outbox_unpublished_idx``; published rows are kept for days)."""
    pending = Q(state=OutboxMessage.State.PENDING)
    backlog = (
        OutboxMessage.objects.exclude(state=OutboxMessage.State.PUBLISHED)
        .order_by()
        .aggregate(
            pending=Count("pk", filter=pending),
            dead=Count("pk", filter=Q(state=OutboxMessage.State.DEAD)),
            oldest=Min("created_at", filter=pending),
        )
    )
    return OutboxBacklog(int(backlog["pending"]), int(backlog["dead"]), backlog["oldest"])


@dataclass(frozen=True, slots=True)
class OutboxLag:
    """How far the outbox relay is behind.

    ``pending`` rows wait to be published (the oldest since ``oldest_pending_at``); ``dead``
    rows were refused too often and wait for staff to requeue them. Over the last hour,
    ``published_last_hour`` rows were published, with the median and the largest delay between
    the event's commit and its publication.
    """

    until: datetime
    pending: int
    dead: int
    oldest_pending_at: datetime | None
    published_last_hour: int
    lag_p50: timedelta | None
    lag_max: timedelta | None

    @property
    def oldest_pending_age(self) -> timedelta | None:
        if self.oldest_pending_at is None:
            return None
        return max(timedelta(0), self.until - self.oldest_pending_at)


def outbox_lag(*, now: datetime | None = None) -> OutboxLag:
    """The outbox backlog and publication delay, in two queries that touch only unpublished
    rows and rows published in the last hour (published rows are kept for days)."""
    until = now if now is not None else timezone.now()
    backlog = outbox_backlog()
    lag = ExpressionWrapper(F("published_at") - F("created_at"), output_field=DurationField())
    published = (
        OutboxMessage.objects.filter(
            state=OutboxMessage.State.PUBLISHED,
            published_at__gte=until - HOUR,
            published_at__lte=until,
        )
        .order_by()
        .aggregate(
            count=Count("*"),
            p50=_PercentileCont(lag, fraction=0.5, output_field=DurationField()),
            max=Max(lag),
        )
    )
    return OutboxLag(
        until=until,
        pending=backlog.pending,
        dead=backlog.dead,
        oldest_pending_at=backlog.oldest_pending_at,
        published_last_hour=int(published["count"]),
        lag_p50=published["p50"],
        lag_max=published["max"],
    )
