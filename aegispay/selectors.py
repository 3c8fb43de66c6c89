"""Reads for the operations back office: the dashboard and the live columns of the admin lists.

They live in ``aegispay`` because they join what the apps keep apart: payment and attempt
rows (``payments``), the outbox (``outbox``), the gateway configuration (``routing``) and the
live breaker and metrics state in Redis (``gateways``, ``routing``). Every function returns
frozen dataclasses, never querysets, so the views only render.

Each read is sized for large tables (a million payments, as many attempts):

* payments per state is one ``GROUP BY status``;
* the per-gateway windows are one ``GROUP BY gateway, currency, status`` over authorize
  attempts of the last day, with the last hour as ``FILTER`` aggregates of the same scan. The
  ``status IN (every status)`` condition is there on purpose: it lets PostgreSQL use the
  existing ``(status, created_at)`` index with ``created_at`` as an index condition, instead of
  scanning every attempt ever made;
* the outbox backlog reads only unpublished rows (the partial index ``outbox_unpublished_idx``)
  and the publication lag only rows published in the last hour (``outbox_published_idx``);
* the live gateway state is two pipelined Redis round trips for all gateways together, and a
  Redis outage is reported as a value (``GatewaysLive.available`` is False), never raised, so
  an admin page still renders while Redis is down.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    Count,
    Q,
    Sum,
)
from django.utils import timezone

from outbox.selectors import OutboxLag, outbox_lag
from payments.models import AttemptOperation, AttemptStatus, Payment, PaymentAttempt, PaymentStatus
from routing.live import GatewaysLive, gateway_names_known, gateways_live

logger = logging.getLogger(__name__)

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


def _windows(rows: Iterable[dict[str, Any]], prefix: str) -> tuple[GatewayWindow, ...]:
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


# --- the dashboard as a whole ---


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the operations dashboard shows, read at ``generated_at``."""

    generated_at: datetime
    payments_by_status: Mapping[str, int]
    windows: AttemptWindows
    outbox: OutboxLag
    gateways: tuple[str, ...]
    live: GatewaysLive

    @property
    def total_payments(self) -> int:
        return sum(self.payments_by_status.values())


def dashboard_read(*, now: datetime | None = None) -> Dashboard:
    """Read the whole dashboard: four SQL queries plus one for the gateway list, and two Redis
    round trips. The gateways shown are the configured and registered ones plus any that took
    attempts in the last day (a removed gateway's recent traffic stays visible)."""
    at = now if now is not None else timezone.now()
    windows = attempt_windows(now=at)
    names = tuple(
        dict.fromkeys([*gateway_names_known(), *(window.gateway for window in windows.day)])
    )
    return Dashboard(
        generated_at=at,
        payments_by_status=payment_counts_by_status(),
        windows=windows,
        outbox=outbox_lag(now=at),
        gateways=names,
        live=gateways_live(names),
    )
