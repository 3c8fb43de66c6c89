"""The operations dashboard: staff only, and every figure on it matches rows and Redis state
the test made (real PostgreSQL and Redis, the Django test client)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from gateways.breaker import BreakerState, breaker_for
from outbox.models import OutboxMessage
from payments.merchants import merchant_create
from payments.models import Merchant, Payment, PaymentAttempt
from routing.models import GatewayConfig
from tests.conftest import ensure_sandbox_gateway_configs
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


@pytest.fixture(autouse=True)
def _metrics_namespace(settings: Any) -> None:
    """Routing metrics of this test only (a fresh Redis key prefix)."""
    settings.ROUTING_METRICS_PREFIX = f"aegispay:test-dashboard:{uuid.uuid4().hex}:"


@pytest.fixture
def staff() -> Client:
    """A staff user with no model permission at all: the dashboard asks only for is_staff."""
    client = Client()
    client.force_login(User.objects.create_user("viewer", password="pw-12345678", is_staff=True))
    return client


@pytest.fixture
def merchant() -> Merchant:
    return merchant_create(name="Dashboard merchant")[0]


@pytest.fixture
def gateway() -> Iterator[str]:
    """A configured gateway of this test only, so its breaker is not shared with other tests."""
    name = f"gw_{uuid.uuid4().hex[:10]}"
    GatewayConfig.objects.create(name=name, methods=["card"], priority=50)
    yield name
    breaker_for(name).reset()


@pytest.fixture
def redis_down(settings: Any) -> None:
    """The cache (and so every raw Redis connection) points at a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        }
    }


def make_attempt(
    payment: Payment,
    number: int,
    *,
    gateway: str,
    status: str,
    amount: int,
    age: timedelta,
    operation: str = "authorize",
) -> PaymentAttempt:
    attempt = PaymentAttempt.objects.create(
        payment=payment,
        number=number,
        operation=operation,
        gateway=gateway,
        status=status,
        amount=amount,
        currency="USD",
    )
    PaymentAttempt.objects.filter(pk=attempt.pk).update(created_at=timezone.now() - age)
    return attempt


def test_staff_see_the_dashboard_and_others_are_sent_to_the_login(staff: Client) -> None:
    ordinary = Client()
    ordinary.force_login(User.objects.create_user("customer", password="pw-12345678"))
    page = staff.get(DASHBOARD)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Operations dashboard" in html
    # Charts are inline SVG; nothing is loaded from another host.
    assert '<svg class="ops-bar"' in html
    assert 'src="http' not in html
    assert 'href="http' not in html
    assert ordinary.get(DASHBOARD)["Location"] == f"/admin/login/?next={DASHBOARD}"
    assert Client().get(DASHBOARD)["Location"] == f"/admin/login/?next={DASHBOARD}"


def test_an_inactive_staff_user_is_refused() -> None:
    client = Client()
    client.force_login(
        User.objects.create_user("gone", password="pw-12345678", is_staff=True, is_active=False)
    )
    assert client.get(DASHBOARD)["Location"] == f"/admin/login/?next={DASHBOARD}"


def test_the_admin_index_links_to_the_dashboard(staff: Client) -> None:
    assert f'href="{DASHBOARD}"' in staff.get("/admin/").content.decode()


def test_payments_are_counted_per_state(staff: Client, merchant: Merchant) -> None:
    for status in ("failed", "failed", "completed", "initiated", "partially_refunded"):
        payment_in(merchant, status)
    page = staff.get(DASHBOARD)
    html = page.content.decode()
    counts = page.context["dashboard"].payments_by_status
    assert {k: v for k, v in counts.items() if v} == {
        "failed": 2,
        "completed": 1,
        "initiated": 1,
        "partially_refunded": 1,
    }
    assert list(counts) == [
        "initiated",
        "processing",
        "authorized",
        "captured",
        "completed",
        "refund_initiated",
        "partially_refunded",
        "refunded",
        "failed",
        "cancelled",
        "expired",
    ]
    assert 'data-state="failed" data-count="2"' in html
    assert 'data-state="partially_refunded" data-count="1"' in html
    assert 'data-state="refunded" data-count="0"' in html
    assert "5 in all" in html


def test_approval_rate_and_volume_per_gateway_over_the_hour_and_the_day(
    staff: Client, merchant: Merchant, gateway: str
) -> None:
    minutes = timedelta(minutes=1)
    rows = [
        # In the last hour: 2 approved, 1 declined, 1 error, 1 in flight.
        ("succeeded", 1000, 10 * minutes),
        ("succeeded", 2550, 20 * minutes),
        ("declined", 700, 5 * minutes),
        ("error", 300, 30 * minutes),
        ("pending", 400, 1 * minutes),
        # Earlier in the day: 2 declined, 1 unknown (an error).
        ("declined", 900, 3 * 60 * minutes),
        ("declined", 900, 5 * 60 * minutes),
        ("unknown", 500, 20 * 60 * minutes),
        # Older than a day: not counted.
        ("succeeded", 5000, 25 * 60 * minutes),
        ("succeeded", 5000, 48 * 60 * minutes),
    ]
    for status, amount, age in rows:
        make_attempt(
            payment_in(merchant, "processing"),
            1,
            gateway=gateway,
            status=status,
            amount=amount,
            age=age,
        )
    captured = payment_in(merchant, "processing")
    make_attempt(captured, 1, gateway=gateway, status="succeeded", amount=1, age=minutes)
    make_attempt(
        captured, 2, gateway=gateway, status="succeeded", amount=1, age=minutes, operation="capture"
    )

    page = staff.get(DASHBOARD)
    windows = page.context["dashboard"].windows
    hour = {w.gateway: w for w in windows.hour}[gateway]
    day = {w.gateway: w for w in windows.day}[gateway]
    html = page.content.decode()

    # The hour: 3 approved (the captured payment's authorize too), 1 declined, 1 error.
    assert (hour.approved, hour.declined, hour.errors, hour.in_flight) == (3, 1, 1, 1)
    assert hour.approval_rate == pytest.approx(3 / 5)
    assert [(a.currency, a.minor_units) for a in hour.approved_volume] == [("USD", 3551)]
    assert (day.approved, day.declined, day.errors, day.in_flight) == (3, 3, 2, 1)
    assert day.approval_rate == pytest.approx(3 / 8)
    assert [(a.currency, a.minor_units) for a in day.attempted_volume] == [("USD", 7251)]
    assert (
        f'data-gateway="{gateway}" data-window="hour" data-attempts="6" data-approval-rate="60.0%"'
        in html
    )
    assert (
        f'data-gateway="{gateway}" data-window="day" data-attempts="9" data-approval-rate="37.5%"'
        in html
    )
    assert "USD 35.51" in html


def test_outbox_backlog_and_lag(staff: Client) -> None:
    now = timezone.now()
    rows = [
        ("pending", timedelta(minutes=10), None),
        ("pending", timedelta(minutes=2), None),
        ("pending", timedelta(seconds=5), None),
        ("dead", timedelta(hours=3), None),
        ("dead", timedelta(hours=2), None),
        ("published", timedelta(minutes=30), timedelta(seconds=2)),
        ("published", timedelta(minutes=20), timedelta(seconds=4)),
        # Published two hours ago: outside the lag window.
        ("published", timedelta(hours=2, minutes=1), timedelta(seconds=50)),
    ]
    for index, (state, age, lag) in enumerate(rows):
        message = OutboxMessage.objects.create(
            event_id=f"evt_dash_{index}",
            event_type="payment.created",
            aggregate_type="payment",
            aggregate_id=f"pay_dash_{index}",
            sequence=1,
            merchant_id="mer_dash",
            payload={},
            state=state,
        )
        created = now - age
        OutboxMessage.objects.filter(pk=message.pk).update(
            created_at=created, published_at=created + lag if lag else None
        )

    page = staff.get(DASHBOARD)
    outbox = page.context["dashboard"].outbox
    html = page.content.decode()

    assert (outbox.pending, outbox.dead, outbox.published_last_hour) == (3, 2, 2)
    assert timedelta(minutes=10) <= outbox.oldest_pending_age < timedelta(minutes=10, seconds=30)
    assert outbox.lag_p50 == timedelta(seconds=3)
    assert outbox.lag_max == timedelta(seconds=4)
    assert 'id="outbox-pending"><b>3</b>' in html
    assert 'id="outbox-dead"><b>2</b>' in html
    assert 'id="outbox-lag-p50"><b>3.0 s</b>' in html
    assert 'id="outbox-lag-max"><b>4.0 s</b>' in html
    assert 'id="outbox-oldest"><b>10 min ' in html
    assert 'data-outbox-state="dead" data-count="2"' in html


def test_an_open_breaker_shows_on_the_dashboard_and_the_gateway_list(
    staff: Client, gateway: str, settings: Any
) -> None:
    superuser = Client()
    superuser.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    ensure_sandbox_gateway_configs()
    breaker = breaker_for(gateway)
    for _ in range(settings.BREAKER_MINIMUM_CALLS):
        breaker.record_failure()

    dashboard = staff.get(DASHBOARD)
    listing = superuser.get("/admin/routing/gatewayconfig/")
    dashboard_html, listing_html = dashboard.content.decode(), listing.content.decode()

    assert breaker.state() is BreakerState.OPEN
    assert dashboard.context["dashboard"].live.gateways[gateway].breaker_state == "open"
    assert (
        f'data-breaker="{gateway}"><span class="breaker" data-breaker-state="open"'
        in dashboard_html
    )
    assert "breakers: 2 closed, 0 half-open, 1 open" in dashboard_html
    assert listing.status_code == 200
    assert listing_html.count('data-breaker-state="open"') == 1
    assert listing_html.count('data-breaker-state="closed"') == 2
    assert [row._live.breaker_state for row in listing.context["cl"].result_list] == [
        "closed",
        "closed",
        "open",
    ]


def test_the_dashboard_renders_without_redis(
    staff: Client, merchant: Merchant, redis_down: None
) -> None:
    gateway = GatewayConfig.objects.create(name="gw_unreachable", methods=["card"]).name
    payment_in(merchant, "failed")
    page = staff.get(DASHBOARD)
    html = page.content.decode()
    assert page.status_code == 200
    assert page.context["dashboard"].live.available is False
    assert 'id="live-unavailable"' in html
    assert (
        f'data-breaker="{gateway}"><span class="breaker" data-breaker-state="unavailable"' in html
    )
    assert 'data-state="failed" data-count="1"' in html
