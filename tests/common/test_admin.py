"""The admin helpers every app's back office shares (common/admin.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.sites import AdminSite
from django.test import RequestFactory

from common.admin import ReadOnlyAdmin, breaker_badge, format_duration, format_ms, format_rate
from payments.models import Merchant


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "—"),
        (timedelta(milliseconds=850), "850 ms"),
        (timedelta(seconds=12.34), "12.3 s"),
        (timedelta(minutes=4, seconds=3), "4 min 3 s"),
        (timedelta(hours=2, minutes=5, seconds=9), "2 h 5 min"),
        (timedelta(days=3, hours=4, minutes=1), "3 d 4 h"),
        (timedelta(seconds=-5), "0 ms"),
    ],
)
def test_a_duration_reads_at_the_precision_staff_need(value: timedelta | None, shown: str) -> None:
    assert format_duration(value) == shown


def test_rates_and_latencies_read_the_same_everywhere() -> None:
    assert [format_rate(0.875), format_rate(None)] == ["87.5%", "—"]
    assert [format_ms(119.6), format_ms(None)] == ["120 ms", "—"]


@pytest.mark.parametrize(
    ("state", "shown", "colour"),
    [
        ("closed", "closed", "#2e7d32"),
        ("half_open", "half-open", "#ef6c00"),
        ("open", "open", "#c62828"),
        (None, "unavailable", "#757575"),
    ],
)
def test_a_breaker_badge_names_and_colours_its_state(
    state: str | None, shown: str, colour: str
) -> None:
    badge = breaker_badge(state)

    assert f">{shown}</span>" in badge
    assert f"background:{colour}" in badge


def test_read_only_admin_refuses_add_change_and_delete() -> None:
    model_admin = ReadOnlyAdmin(Merchant, AdminSite())
    request = RequestFactory().get("/admin/")

    assert (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request),
        model_admin.has_delete_permission(request),
    ) == (False, False, False)
