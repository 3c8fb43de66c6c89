"""The back office in a real browser: Debian's headless Chromium, driven by Playwright, against
a live server on the test database, with a real Celery worker process behind it.

An operator logs in, finds a failed payment, retries it, refunds a completed one partially,
and sees the events appear on each payment's timeline. Screenshots of every step are saved
under ``artifacts/screenshots/`` (kept out of git). ``make test`` installs Chromium with
apt-get when it runs as root; elsewhere, without ``/usr/bin/chromium``, this test is skipped
and says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.db import connections

from payments.merchants import merchant_create
from payments.models import Payment, PaymentEvent, Refund
from payments.services import payment_create
from tests.conftest import WorkerFactory, ensure_sandbox_gateway_configs
from tests.payments.helpers import payment_in
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct-horse-battery-staple"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (make test installs it when run as root; "
        "or: sudo apt-get install chromium)",
    ),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; Django refuses ORM calls from
    # a thread with a running loop unless told it is safe. It is: no Django code is async here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(20_000)
        yield page
        # ORM calls made while Playwright's loop runs get a connection of their own; close it
        # here, inside the loop, or it outlives the test and the test database cannot be
        # dropped.
        connections.close_all()
        browser.close()


def operator(django_user_model: type) -> str:
    importlib.import_module("payments.migrations.0005_staff_groups").create(django_apps, None)
    user = django_user_model.objects.create_user("olivia", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    return user.username


def completed_payment(merchant: object) -> Payment:
    """A payment charged for real at the sandbox, so that its refund is a real one too."""
    payment = payment_create(
        merchant=merchant,
        amount=2000,
        currency="USD",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    return wait_until(
        lambda: (p := Payment.objects.get(pk=payment.pk)).status == "completed" and p, timeout=60
    )


def timeline_types(page: object) -> list[str]:
    rows = page.locator("table#payment-timeline tr.timeline-event")
    return [rows.nth(i).get_attribute("data-type") for i in range(rows.count())]


def wait_for_event(page: object, event_type: str) -> list[str]:
    """Reload the payment page until its timeline shows ``event_type`` (the worker is async)."""

    def shown() -> list[str]:
        page.reload()
        types = timeline_types(page)
        return types if event_type in types else []

    return wait_until(shown, timeout=60, interval=0.5)


def open_payment(page: object, payment_id: str) -> None:
    """Find a payment the way staff do: the list's search box, then the result's link."""
    page.goto(page.url.split("/admin/")[0] + "/admin/payments/payment/")
    page.fill("input[name=q]", payment_id)
    page.press("input[name=q]", "Enter")
    page.wait_for_url(f"**q={payment_id}*")  # the search's page, not the list before it
    assert page.locator("#result_list tbody tr").count() == 1
    page.get_by_role("link", name=payment_id).first.click()
    page.locator("table#payment-timeline").wait_for()


def test_an_operator_retries_a_failed_payment_and_refunds_a_completed_one(
    live_server: object,
    start_worker: WorkerFactory,
    django_user_model: type,
    browser_page: object,
) -> None:
    page = browser_page
    username = operator(django_user_model)
    ensure_sandbox_gateway_configs()
    merchant, _key = merchant_create(name="Browser shop")
    start_worker()
    failed = payment_in(merchant, "failed")
    completed = completed_payment(merchant)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/payments/payment/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.locator("#result_list").wait_for()
    page.screenshot(path=SCREENSHOTS / "01-payment-list.png", full_page=True)

    # A failed payment: found by its id, retried, and processed again to the end.
    open_payment(page, failed.pk)
    assert timeline_types(page) == ["payment.initiated", "payment.failed"]
    page.screenshot(path=SCREENSHOTS / "02-failed-payment.png", full_page=True)
    page.click("#action-retry")
    page.screenshot(path=SCREENSHOTS / "03-retry-confirmation.png", full_page=True)
    page.click("#confirm-action")
    assert "is initiated again" in page.locator("ul.messagelist").inner_text()
    retried = wait_for_event(page, "payment.completed")
    staff_row = page.locator(f'tr.timeline-event[data-actor="staff:{username}"]')
    page.screenshot(path=SCREENSHOTS / "04-retried-payment-timeline.png", full_page=True)

    assert retried[:3] == ["payment.initiated", "payment.failed", "payment.initiated"]
    assert staff_row.count() == 1
    assert staff_row.first.get_attribute("data-type") == "payment.initiated"
    assert Payment.objects.get(pk=failed.pk).status == "completed"

    # A completed payment: refunded in part, 5.00 of 20.00 USD.
    open_payment(page, completed.pk)
    page.click("#action-refund")
    page.fill("#payment-action-form input[name=amount]", "5.00")
    page.fill("#payment-action-form [name=reason]", "one item returned")
    page.screenshot(path=SCREENSHOTS / "05-refund-form.png", full_page=True)
    page.click("#confirm-action")
    # Wait for the POST's redirect to land before reloading (a reload during it fails).
    assert "of 5.00 USD started" in page.locator("ul.messagelist").inner_text()
    refunded = wait_for_event(page, "payment.partially_refunded")
    page.screenshot(path=SCREENSHOTS / "06-refunded-payment-timeline.png", full_page=True)

    assert refunded[-4:] == [
        "refund.created",
        "payment.refund_initiated",
        "refund.succeeded",
        "payment.partially_refunded",
    ]
    assert page.locator("#payment-refunds .refund-status").first.inner_text().strip() == (
        "succeeded"
    )
    refund = Refund.objects.get(payment_id=completed.pk)
    assert (refund.amount, refund.status) == (500, "succeeded")
    assert PaymentEvent.objects.filter(payment_id=completed.pk, actor=f"staff:{username}").exists()
    assert Payment.objects.get(pk=completed.pk).amount_refunded == 500
    assert len(list(SCREENSHOTS.glob("0*.png"))) >= 6
