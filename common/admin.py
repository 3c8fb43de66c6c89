"""Admin pieces shared by the apps: the read-only base class and the small formatters the
live columns and the dashboard share, so a rate or a breaker state reads the same everywhere."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from django.contrib import admin
from django.db import models
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

# What staff read when a live figure could not be fetched (Redis down), as opposed to "—",
# which means there is no data yet.
UNAVAILABLE = "unavailable"
NO_DATA = "—"

# Inline styles, not classes: the badge appears on stock admin change lists, which load no
# stylesheet of ours. Colours stay readable in the admin's light and dark themes.
_BREAKER_STYLES = {
    "closed": "background:#2e7d32;color:#fff",
    "half_open": "background:#ef6c00;color:#fff",
    "open": "background:#c62828;color:#fff",
    UNAVAILABLE: "background:#757575;color:#fff",
}
_BADGE = "padding:1px 6px;border-radius:8px;font-size:11px;white-space:nowrap;{}"


_ModelT = TypeVar("_ModelT", bound=models.Model)


class ReadOnlyAdmin(admin.ModelAdmin[_ModelT]):
    """Staff may look, never add, change or delete: only services write these rows."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def breaker_badge(state: str | None) -> SafeString:
    """A coloured badge for a breaker state (``closed``, ``half_open``, ``open``); None means
    the state could not be read and shows as "unavailable"."""
    shown = state or UNAVAILABLE
    style = _BREAKER_STYLES.get(shown, _BREAKER_STYLES[UNAVAILABLE])
    return format_html(
        '<span class="breaker" data-breaker-state="{}" style="{}">{}</span>',
        shown,
        _BADGE.format(style),
        shown.replace("_", "-"),
    )


def format_rate(rate: float | None) -> str:
    """A share as a percentage with one decimal ("87.5%"), "—" without data."""
    return NO_DATA if rate is None else f"{rate * 100:.1f}%"


def format_ms(value: float | None) -> str:
    """A latency in whole milliseconds ("120 ms"), "—" without samples."""
    return NO_DATA if value is None else f"{value:.0f} ms"


def format_duration(value: timedelta | None) -> str:
    """A delay at the precision staff need: "850 ms", "12.3 s", "4 min 3 s", "2 h 5 min",
    "3 d 4 h"; "—" when there is none."""
    if value is None:
        return NO_DATA
    seconds = max(0.0, value.total_seconds())
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"
