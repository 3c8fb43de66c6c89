"""Reads of payments: the merchant API's, always scoped to one merchant; the back office's
staff-wide figures (payments per state, approval and volume per gateway), sized for large
tables; and the beat sweeps' candidates (what the reconciler drives again, what staff must look
at, what expires and what settles). Writes are elsewhere: ``payments/services.py`` and
``payments/gateway.py`` through ``payments/eventstore.py``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db.models import Count, Model, Q, QuerySet, Sum
from django.utils import timezone

from common.pagination import cursor_page

from .errors import EventNotFound, PaymentNotFound, RefundNotFound
from .models import (
    OPEN_ATTEMPT_STATUSES,
    ApiKey,
    AttemptOperation,
    AttemptStatus,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    PaymentStatus,
    Refund,
    RefundStatus,
)


class _Window(Protocol):
    """The time filters and cursors every list takes (``ListParams`` and its kin, frozen)."""

    @property
    def limit(self) -> int: ...
    @property
    def starting_after(self) -> str | None: ...
    @property
    def ending_before(self) -> str | None: ...
    @property
    def created_gte(self) -> datetime | None: ...
    @property
    def created_lt(self) -> datetime | None: ...


M = TypeVar("M", bound=Model)


def _page(qs: QuerySet[M], params: _Window) -> tuple[list[M], bool]:
    """One page of ``qs`` between the times asked for, newest first (``cursor_page``)."""
    if params.created_gte:
        qs = qs.filter(created_at__gte=params.created_gte)
    if params.created_lt:
        qs = qs.filter(created_at__lt=params.created_lt)
    return cursor_page(
        qs,
        limit=params.limit,
        starting_after=params.starting_after,
        ending_before=params.ending_before,
    )


@dataclass(frozen=True)
class ListParams:
    """What ``payment_list`` filters and pages by (the API's ``PaymentListParamsSerializer``
    validates them from the query string)."""

    limit: int
    starting_after: str | None = None
    ending_before: str | None = None
    status: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None
    merchant_reference: str | None = None


def payment_get(*, merchant: Merchant, livemode: bool, payment_id: str) -> Payment:
    """The merchant's payment of this mode; another merchant's id, or one of the other mode, is
    ``PaymentNotFound`` like a missing one."""
    try:
        return Payment.objects.get(merchant=merchant, livemode=livemode, pk=payment_id)
    except Payment.DoesNotExist:
        raise PaymentNotFound(f"no such payment: {payment_id}", param="id") from None


def payment_list(
    *, merchant: Merchant, livemode: bool, params: ListParams
) -> tuple[list[Payment], bool]:
    """One page of the merchant's payments, newest first, and whether more lie beyond it.

    Ids sort by creation time, so the cursor is the id itself: ``starting_after`` pages to
    older payments, ``ending_before`` to newer ones.
    """
    qs: QuerySet[Payment] = Payment.objects.filter(merchant=merchant, livemode=livemode)
    if params.status:
        qs = qs.filter(status=params.status)
    if params.created_gte:
        qs = qs.filter(created_at__gte=params.created_gte)
    if params.created_lt:
        qs = qs.filter(created_at__lt=params.created_lt)
    if params.merchant_reference is not None:
        qs = qs.filter(merchant_reference=params.merchant_reference)
    return cursor_page(
        qs,
        limit=params.limit,
        starting_after=params.starting_after,
        ending_before=params.ending_before,
    )


@dataclass(frozen=True)
class EventListParams:
    """What ``event_list`` filters and pages by (``EventListParamsSerializer``)."""

    limit: int
    type: str | None = None
    starting_after: str | None = None
    ending_before: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None


def event_list(
    *, merchant: Merchant, livemode: bool, params: EventListParams
) -> tuple[list[PaymentEvent], bool]:
    """One page of every event of the merchant's payments, newest first, and whether more lie
    beyond it. ``type`` is one type, or ``payment.*`` / ``refund.*`` / ``*``. Events are
    append-only and never deleted, so a merchant can fetch whatever a webhook missed."""
    qs: QuerySet[PaymentEvent] = PaymentEvent.objects.filter(
        payment__merchant=merchant, livemode=livemode
    )
    if params.type and params.type != "*":
        if params.type.endswith(".*"):
            qs = qs.filter(type__startswith=params.type[:-1])
        else:
            qs = qs.filter(type=params.type)
    return _page(qs, params)


def event_get(*, merchant: Merchant, livemode: bool, event_id: str) -> PaymentEvent:
    """One of the merchant's events; another merchant's id is ``EventNotFound`` like a
    missing one."""
    try:
        return PaymentEvent.objects.get(payment__merchant=merchant, livemode=livemode, pk=event_id)
    except PaymentEvent.DoesNotExist:
        raise EventNotFound(f"no such event: {event_id}", param="id") from None


def payment_events(*, merchant: Merchant, livemode: bool, payment_id: str) -> list[PaymentEvent]:
    """The payment's events, oldest first."""
    payment = payment_get(merchant=merchant, livemode=livemode, payment_id=payment_id)
    return list(PaymentEvent.objects.filter(payment=payment).order_by("sequence"))


def refund_list(*, merchant: Merchant, livemode: bool, payment_id: str) -> list[Refund]:
    """The payment's refunds, newest first."""
    payment = payment_get(merchant=merchant, livemode=livemode, payment_id=payment_id)
    return list(Refund.objects.filter(payment=payment).order_by("-id"))


@dataclass(frozen=True)
class RefundListParams:
    """What ``refund_page`` filters and pages by (``RefundListParamsSerializer``)."""

    limit: int
    payment: str | None = None
    status: str | None = None
    starting_after: str | None = None
    ending_before: str | None = None
    created_gte: datetime | None = None
    created_lt: datetime | None = None


def refund_page(
    *, merchant: Merchant, livemode: bool, params: RefundListParams
) -> tuple[list[Refund], bool]:
    """One page of the merchant's refunds across its payments, newest first, and whether
    more lie beyond it."""
    qs: QuerySet[Refund] = Refund.objects.filter(payment__merchant=merchant, livemode=livemode)
    if params.payment:
        qs = qs.filter(payment_id=params.payment)
    if params.status:
        qs = qs.filter(status=params.status)
    return _page(qs, params)


def refund_get(*, merchant: Merchant, livemode: bool, refund_id: str) -> Refund:
    """One of the merchant's refunds; another merchant's id is ``RefundNotFound``."""
    try:
        return Refund.objects.get(payment__merchant=merchant, livemode=livemode, pk=refund_id)
    except Refund.DoesNotExist:
        raise RefundNotFound(f"no such refund: {refund_id}", param="id") from None


def api_key_list(
    *,
    merchant: Merchant,
    live: bool,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[ApiKey], bool]:
    """One page of the merchant's keys of one mode that are not revoked, newest first."""
    qs: QuerySet[ApiKey] = ApiKey.objects.filter(
        merchant=merchant, live=live, revoked_at__isnull=True
    )
    return cursor_page(qs, limit=limit, starting_after=starting_after, ending_before=ending_before)


# --- staff-wide figures for the back office (backoffice/selectors.py) ---

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# How an attempt's status counts in the approval figures. ``unknown`` (a timeout) counts as an
# error, as the routing metrics count it; ``pending`` is still in flight and is shown apart.
_OUTCOME = {
    AttemptStatus.SUCCEEDED: "approved",
    AttemptStatus.DECLINED: "declined",
    AttemptStatus.ERROR: "errors",
    AttemptStatus.UNKNOWN: "errors",
    AttemptStatus.PENDING: "in_flight",
}


# --- payments per state ---


def payment_counts_by_status() -> dict[str, int]:
    """How many payments are in each state (every state present, zero when none), in the
    state machine's order. One ``GROUP BY`` over the table; no per-state query."""
    rows = Payment.objects.order_by().values_list("status").annotate(n=Count("*"))
    found = dict(rows)
    return {status.value: int(found.get(status.value, 0)) for status in PaymentStatus}


# --- approval rate and volume per gateway ---


@dataclass(frozen=True, slots=True)
class Amount:
    """A sum of minor units in one currency (sums are never added across currencies)."""

    currency: str
    minor_units: int


@dataclass(frozen=True, slots=True)
class GatewayWindow:
    """The authorize attempts one gateway received in a time window.

    ``approval_rate`` is approved / (approved + declined + errors): the share of finished
    attempts that authorised money, None when none finished. Attempts still ``pending`` are
    ``in_flight`` and not in the rate. Volumes are per currency, largest first.
    """

    gateway: str
    approved: int = 0
    declined: int = 0
    errors: int = 0
    in_flight: int = 0
    approved_volume: tuple[Amount, ...] = ()
    attempted_volume: tuple[Amount, ...] = ()

    @property
    def finished(self) -> int:
        return self.approved + self.declined + self.errors

    @property
    def attempts(self) -> int:
        return self.finished + self.in_flight

    @property
    def approval_rate(self) -> float | None:
        return self.approved / self.finished if self.finished else None


@dataclass(frozen=True, slots=True)
class AttemptWindows:
    """Per-gateway authorize figures over the last hour and the last day (which includes the
    hour), both ending at ``until``."""

    until: datetime
    hour: tuple[GatewayWindow, ...]
    day: tuple[GatewayWindow, ...]


def _windows(rows: Iterable[Mapping[str, Any]], prefix: str) -> tuple[GatewayWindow, ...]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    approved: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    attempted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        n, amount = int(row[f"{prefix}_count"] or 0), int(row[f"{prefix}_amount"] or 0)
        if not n:
            continue
        gateway, currency, outcome = row["gateway"], row["currency"], _OUTCOME[row["status"]]
        counts[gateway][outcome] += n
        attempted[gateway][currency] += amount
        if outcome == "approved":
            approved[gateway][currency] += amount

    def volume(sums: Mapping[str, int]) -> tuple[Amount, ...]:
        ordered = sorted(sums.items(), key=lambda item: (-item[1], item[0]))
        return tuple(Amount(currency=c, minor_units=a) for c, a in ordered)

    return tuple(
        GatewayWindow(
            gateway=gateway,
            approved=counts[gateway]["approved"],
            declined=counts[gateway]["declined"],
            errors=counts[gateway]["errors"],
            in_flight=counts[gateway]["in_flight"],
            approved_volume=volume(approved[gateway]),
            attempted_volume=volume(attempted[gateway]),
        )
        for gateway in sorted(counts)
    )


def attempt_windows(*, now: datetime | None = None) -> AttemptWindows:
    """Approval figures and volume per gateway over the last hour and the last day.

    One query over authorize attempts created in the last day, grouped by gateway, currency
    and status, with the hour's figures as filtered aggregates of the same rows.
    """
    until = now if now is not None else timezone.now()
    day_start, hour_start = until - DAY, until - HOUR
    in_hour = Q(created_at__gte=hour_start)
    rows = (
        PaymentAttempt.objects.filter(
            # Every status, spelled out: PostgreSQL can then use the (status, created_at) index.
            status__in=[status.value for status in AttemptStatus],
            created_at__gte=day_start,
            created_at__lte=until,
            operation=AttemptOperation.AUTHORIZE,
        )
        .order_by()
        .values("gateway", "currency", "status")
        .annotate(
            day_count=Count("*"),
            day_amount=Sum("amount"),
            hour_count=Count("pk", filter=in_hour),
            hour_amount=Sum("amount", filter=in_hour),
        )
    )
    fetched = list(rows)
    return AttemptWindows(until=until, hour=_windows(fetched, "hour"), day=_windows(fetched, "day"))


# --- the beat sweeps' candidates (payments/tasks.py), and what staff must look at ---


def expiries_due(now: datetime) -> QuerySet[Payment]:
    """Authorized payments whose authorisation window has passed: what
    ``payments_expire_authorizations`` expires (``payment_expire`` checks again under the lock)."""
    return Payment.objects.filter(
        status=PaymentStatus.AUTHORIZED, authorization_expires_at__lte=now
    )


def settlements_due(now: datetime) -> QuerySet[Payment]:
    """Captured payments not moved on (``progressed_at``) for ``SETTLEMENT_DELAY_SECONDS``: what
    ``payments_settle_captures`` settles (``payment_settle`` checks again under the lock)."""
    cutoff = now - timedelta(seconds=settings.SETTLEMENT_DELAY_SECONDS)
    return Payment.objects.filter(status=PaymentStatus.CAPTURED, progressed_at__lte=cutoff)


def _due(now: datetime) -> Q:
    cutoff = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    return Q(next_check_at__lte=now) | Q(next_check_at__isnull=True, created_at__lte=cutoff)


def open_attempts_due(now: datetime) -> QuerySet[PaymentAttempt]:
    """Open attempts no live sender holds (never planned past the cutoff, or past their
    ``next_check_at``)."""
    return PaymentAttempt.objects.filter(_due(now), status__in=OPEN_ATTEMPT_STATUSES)


def pending_refunds_due(now: datetime) -> QuerySet[Refund]:
    """Pending refunds no live sender holds."""
    return Refund.objects.filter(_due(now), status=RefundStatus.PENDING)


def stalled_payments(now: datetime) -> QuerySet[Payment]:
    """Payments whose processing has no task behind it: ``initiated`` (the task was lost
    before it ran), or ``processing`` with no open attempt (the last attempt closed as not
    taken and the message that would try the next gateway was lost)."""
    cutoff = now - timedelta(seconds=settings.RECONCILE_AFTER_SECONDS)
    open_attempts = PaymentAttempt.objects.filter(status__in=OPEN_ATTEMPT_STATUSES)
    return Payment.objects.filter(progressed_at__lte=cutoff).filter(
        Q(status=PaymentStatus.INITIATED)
        | Q(status=PaymentStatus.PROCESSING) & ~Q(pk__in=open_attempts.values("payment_id"))
    )


def unresolved_payment_ids(now: datetime | None = None) -> QuerySet[Payment]:
    """Payments with an operation still open past ``UNRESOLVED_ATTENTION_SECONDS``: an
    authorize, capture or void attempt, or a refund, the gateway has not answered for. Listed
    for staff ("needs attention") and counted by the ``aegispay_unresolved_payments``
    metric; never guessed."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.UNRESOLVED_ATTENTION_SECONDS)
    attempts = PaymentAttempt.objects.filter(
        status__in=OPEN_ATTEMPT_STATUSES, created_at__lte=cutoff
    ).values("payment_id")
    refunds = Refund.objects.filter(status=RefundStatus.PENDING, created_at__lte=cutoff).values(
        "payment_id"
    )
    return Payment.objects.filter(Q(pk__in=attempts) | Q(pk__in=refunds))
