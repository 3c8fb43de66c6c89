"""The gateway configuration admin: editable, and its list shows each gateway's live breaker
state, success rate and latency from the shared metrics (real Redis; tests/routing/conftest.py
gives every test its own metrics namespace)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from routing.metrics import record_outcome
from routing.models import GatewayConfig
from tests.conftest import ensure_sandbox_gateway_configs

LIST = "/admin/routing/gatewayconfig/"


@pytest.fixture
def staff() -> Client:
    ensure_sandbox_gateway_configs()
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    return client


def test_the_list_shows_success_rate_and_latency_from_the_live_metrics(staff: Client) -> None:
    for latency in (100, 120, 100):
        record_outcome(gateway="sandbox_a", outcome="approved", latency_ms=latency)
    record_outcome(gateway="sandbox_a", outcome="declined", latency_ms=300)
    record_outcome(gateway="sandbox_a", outcome="error", latency_ms=900)

    page = staff.get(LIST)
    html = page.content.decode()
    live = {row.name: row._live for row in page.context["cl"].result_list}

    assert page.status_code == 200
    assert live["sandbox_a"].success_rate == pytest.approx(0.75)
    assert (live["sandbox_a"].latency_p50_ms, live["sandbox_a"].latency_p95_ms) == (120.0, 900.0)
    assert '<td class="field-success_rate">75.0% (3/4)</td>' in html
    assert '<td class="field-latency">120 ms / 900 ms</td>' in html
    # sandbox_b has no samples yet: no data, which is not the same as "unavailable".
    assert '<td class="field-success_rate">— (0/0)</td>' in html
    assert '<td class="field-latency">— / —</td>' in html
    assert html.count('data-breaker-state="closed"') == 2


def test_the_live_columns_do_not_query_the_database_per_row(staff: Client) -> None:
    for index in range(8):
        GatewayConfig.objects.create(name=f"extra_{index}", priority=10 + index)
    with CaptureQueriesContext(connection) as few:
        staff.get(LIST)
    for index in range(8, 16):
        GatewayConfig.objects.create(name=f"extra_{index}", priority=10 + index)
    with CaptureQueriesContext(connection) as many:
        page = staff.get(LIST)
    assert len(page.context["cl"].result_list) == 18
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_list_stays_editable(staff: Client) -> None:
    rows = list(GatewayConfig.objects.order_by("priority", "name"))
    form = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": str(len(rows)),
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for index, row in enumerate(rows):
        form[f"form-{index}-id"] = str(row.pk)
        form[f"form-{index}-priority"] = str(row.priority)
        form[f"form-{index}-enabled"] = "on"
    form["form-0-priority"] = "7"
    form.pop("form-1-enabled")

    response = staff.post(LIST, form)

    assert response.status_code == 302
    assert GatewayConfig.objects.get(pk=rows[0].pk).priority == 7
    assert GatewayConfig.objects.get(pk=rows[1].pk).enabled is False


def test_the_edit_page_shows_the_live_state_and_saves(staff: Client) -> None:
    record_outcome(gateway="sandbox_b", outcome="approved", latency_ms=40)
    row = GatewayConfig.objects.get(name="sandbox_b")
    url = f"{LIST}{row.pk}/change/"
    page = staff.get(url).content.decode()
    saved = staff.post(
        url,
        {
            "name": "sandbox_b",
            "adapter": "sandbox",
            "enabled": "on",
            "currencies": '["USD", "EUR"]',
            "methods": '["card"]',
            "countries": "[]",
            "min_amount": "",
            "max_amount": "500000",
            "fee_fixed": "25",
            "fee_bps": "250",
            "priority": "2",
        },
    )
    assert "breaker closed; success rate 100.0% (1 approved, 0 declined, 0 errors)" in page
    assert saved.status_code == 302
    assert GatewayConfig.objects.get(pk=row.pk).currencies == ["USD", "EUR"]
    assert GatewayConfig.objects.get(pk=row.pk).max_amount == 500000


def test_the_list_says_unavailable_when_redis_is_down(staff: Client, settings: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}
    }
    page = staff.get(LIST)
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('<td class="field-success_rate">unavailable</td>') == 2
    assert html.count('data-breaker-state="unavailable"') == 2
    assert "Live gateway state is unavailable" in html
