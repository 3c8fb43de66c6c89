"""The operations dashboard: a staff-only admin page that shows how payments, gateways and the
outbox are doing right now.

The view reads everything through ``backoffice.selectors.dashboard_read`` and only turns the
numbers into what the template draws. Charts are bars drawn as inline SVG with geometry
computed here, on the server: the admin must work offline, so no chart library, no script
and no CDN. Each bar's figure is also printed as text beside it, so the page reads the same
without colours and to a screen reader.

It is mounted in ``aegispay/urls.py`` through ``admin.site.admin_view``, which requires an
active staff user (operators and viewers alike) and redirects anyone else to the admin login.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from backoffice.selectors import Dashboard, dashboard_read
from common.admin import (
    NO_DATA,
    UNAVAILABLE,
    breaker_badge,
    format_duration,
    format_ms,
    format_rate,
)
from payments.currencies import EXPONENTS
from payments.selectors import Amount, GatewayWindow
from routing.live import GatewayLive

# Bar colour per payment state: green where money moved as asked, amber while it is moving,
# red where it failed, grey where it ended without money.
_STATE_TONE = {
    "initiated": "moving",
    "processing": "moving",
    "authorized": "moving",
    "captured": "good",
    "completed": "good",
    "refund_initiated": "moving",
    "partially_refunded": "good",
    "refunded": "neutral",
    "failed": "bad",
    "cancelled": "neutral",
    "expired": "neutral",
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One horizontal bar: ``width`` is a percentage of the chart's width, as SVG text;
    ``key`` names what it counts (a payment or outbox state)."""

    key: str
    label: str
    value: int
    width: str
    tone: str
    url: str = ""

    @property
    def shown(self) -> str:
        """The value with thousands separators (a million payments must stay readable)."""
        return f"{self.value:,}"


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of a stacked bar, ``x`` and ``width`` as percentages (SVG text)."""

    label: str
    count: int
    x: str
    width: str
    tone: str


@dataclass(frozen=True, slots=True)
class WindowRow:
    """A gateway's figures in one window, formatted for the table and its stacked bar."""

    attempts: int
    approved: int
    declined: int
    errors: int
    in_flight: int
    approval_rate: str
    segments: tuple[Segment, ...]
    approved_volume: str
    attempted_volume: str


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """One gateway on the dashboard: its live breaker and metrics and its two windows."""

    gateway: str
    breaker: SafeString
    breaker_state: str
    bulkhead_full: bool
    live_success_rate: str
    latency_p50: str
    latency_p95: str
    hour: WindowRow
    day: WindowRow


def _pct(part: int, whole: int) -> str:
    return f"{(100 * part / whole) if whole else 0:.2f}"


def format_amount(amount: Amount) -> str:
    """Minor units shown in major units with the currency's own exponent ("USD 1,234.50",
    "JPY 1,200"), computed in ``Decimal``: money is never a float."""
    exponent = EXPONENTS.get(amount.currency, 2)
    major = Decimal(amount.minor_units).scaleb(-exponent)
    return f"{amount.currency} {major:,.{exponent}f}"


def _volume(amounts: Sequence[Amount]) -> str:
    return ", ".join(format_amount(a) for a in amounts) or NO_DATA


def _window_row(window: GatewayWindow | None) -> WindowRow:
    w = window or GatewayWindow(gateway="")
    segments, x = [], 0
    for label, count, tone in (
        ("approved", w.approved, "good"),
        ("declined", w.declined, "moving"),
        ("errors", w.errors, "bad"),
    ):
        if count:
            segments.append(
                Segment(
                    label=label,
                    count=count,
                    x=_pct(x, w.finished),
                    width=_pct(count, w.finished),
                    tone=tone,
                )
            )
            x += count
    return WindowRow(
        attempts=w.attempts,
        approved=w.approved,
        declined=w.declined,
        errors=w.errors,
        in_flight=w.in_flight,
        approval_rate=format_rate(w.approval_rate),
        segments=tuple(segments),
        approved_volume=_volume(w.approved_volume),
        attempted_volume=_volume(w.attempted_volume),
    )


def _gateway_rows(data: Dashboard) -> tuple[GatewayRow, ...]:
    hour = {w.gateway: w for w in data.windows.hour}
    day = {w.gateway: w for w in data.windows.day}
    rows = []
    for name in data.gateways:
        live: GatewayLive | None = data.live.gateways.get(name)
        if live is None:
            state, rate, p50, p95 = UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE
        else:
            state = live.breaker_state
            rate = format_rate(live.success_rate)
            p50, p95 = format_ms(live.latency_p50_ms), format_ms(live.latency_p95_ms)
        rows.append(
            GatewayRow(
                gateway=name,
                breaker=breaker_badge(None if live is None else state),
                breaker_state=state,
                bulkhead_full=bool(live and live.bulkhead_full),
                live_success_rate=rate,
                latency_p50=p50,
                latency_p95=p95,
                hour=_window_row(hour.get(name)),
                day=_window_row(day.get(name)),
            )
        )
    return tuple(rows)


def _state_bars(data: Dashboard) -> tuple[Bar, ...]:
    counts = data.payments_by_status
    largest = max(counts.values(), default=0)
    changelist = reverse("admin:payments_payment_changelist")
    return tuple(
        Bar(
            key=status,
            label=status.replace("_", " "),
            value=count,
            width=_pct(count, largest),
            tone=_STATE_TONE.get(status, "neutral"),
            url=f"{changelist}?{urlencode({'status__exact': status})}",
        )
        for status, count in counts.items()
    )


def _outbox_bars(data: Dashboard) -> tuple[Bar, ...]:
    outbox = data.outbox
    figures = (
        ("pending", outbox.pending, "moving", "pending"),
        ("dead-lettered", outbox.dead, "bad", "dead"),
        ("published in the last hour", outbox.published_last_hour, "good", "published"),
    )
    largest = max(value for _l, value, _t, _s in figures)
    changelist = reverse("admin:outbox_outboxmessage_changelist")
    return tuple(
        Bar(
            key=state,
            label=label,
            value=value,
            width=_pct(value, largest),
            tone=tone,
            url=f"{changelist}?{urlencode({'state__exact': state})}",
        )
        for label, value, tone, state in figures
    )


def dashboard_view(request: HttpRequest) -> TemplateResponse:
    """Render the dashboard. Staff only: the URL wraps this in ``admin.site.admin_view``."""
    data = dashboard_read()
    gateway_rows = _gateway_rows(data)
    breakers = {
        state: sum(1 for row in gateway_rows if row.breaker_state == state)
        for state in ("closed", "half_open", "open")
    }
    context = {
        **admin.site.each_context(request),
        "title": "Operations dashboard",
        "dashboard": data,
        "total_payments": f"{data.total_payments:,}",
        "state_bars": _state_bars(data),
        "gateway_rows": gateway_rows,
        "breaker_totals": breakers,
        "outbox_bars": _outbox_bars(data),
        "outbox_oldest_pending_age": format_duration(data.outbox.oldest_pending_age),
        "outbox_lag_p50": format_duration(data.outbox.lag_p50),
        "outbox_lag_max": format_duration(data.outbox.lag_max),
        "gateway_changelist": reverse("admin:routing_gatewayconfig_changelist"),
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
