"""The operations dashboard's read: it joins what the apps keep apart, each read through the
app that owns it. Payments per state and the per-gateway approval windows come from
``payments.selectors``, the outbox backlog and lag from ``outbox.selectors``, the configured
gateways and their live breaker, bulkhead and metrics state from ``routing.live``. Every
function returns frozen dataclasses, never querysets, so the view only renders.

Sized for large tables (a million payments, as many attempts): four SQL queries plus one for
the gateway list, and two Redis round trips, whatever the data (each selector says how); a
Redis outage is reported as a value (``GatewaysLive.available`` is False), never raised, so the
page still renders while Redis is down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from outbox.selectors import OutboxLag, outbox_lag
from payments.selectors import AttemptWindows, attempt_windows, payment_counts_by_status
from routing.live import GatewaysLive, gateway_names_known, gateways_live


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
