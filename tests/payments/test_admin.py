"""The payments back office in the Django admin: the list, the payment page, the actions and the
two staff roles, through the Django test client against the real PostgreSQL."""

from __future__ import annotations

import importlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from outbox.models import OutboxMessage
from payments import tasks
from payments.admin import PaymentAdmin
from payments.admin_forms import parse_major_amount
from payments.eventstore import payment_transition
from payments.models import Merchant, Payment, PaymentAttempt, PaymentEvent, Refund
from payments.services import payment_create
from tests.conftest import make_client
from tests.payments.helpers import payment_in
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

ACTION_PERMISSIONS = (
    "payments.retry_payment",
    "payments.refund_payment",
    "payments.capture_payment",
    "payments.cancel_payment",
)


def ensure_staff_groups() -> None:
    """Transactional tests empty every table, the data migration's groups included: put them
    back with the migration's own function (idempotent)."""
    groups = importlib.import_module("payments.migrations.0005_staff_groups")
    groups.create(django_apps, None)


def login(username: str, group: str | None, *, client: Client | None = None) -> Client:
    ensure_staff_groups()
    user = User.objects.create_user(username, f"{username}@example.com", "pw-12345678")
    user.is_staff = True
    user.save()
    user.groups.add(*Group.objects.filter(name=group))
    client = client or Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    return client


@pytest.fixture
def operator() -> Client:
    return login("olga", "operators")


@pytest.fixture
def viewer() -> Client:
    return login("victor", "viewers")


@pytest.fixture
def merchant() -> Merchant:
    return make_client().merchant


def change_url(payment: Payment) -> str:
    """As the admin links it: the primary key quoted ("pay_x" is "pay_5Fx")."""
    return f"/admin/payments/payment/{quote(payment.id)}/change/"


def action_url(payment: Payment, action: str) -> str:
    return f"/admin/payments/payment/{quote(payment.id)}/{action}/"


def shown_messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def listed(response: Any) -> list[str]:
    return [payment.id for payment in response.context["cl"].result_list]


def events_of(payment: Payment) -> list[tuple[str, str]]:
    return list(
        PaymentEvent.objects.filter(payment=payment)
        .order_by("sequence")
        .values_list("type", "actor")
    )


# --- reading ---


def test_payment_list_and_detail_show_the_timeline(staff: Client) -> None:
    payment = payment_in(make_client().merchant, "completed")
    listing = staff.get("/admin/payments/payment/")
    detail = staff.get(f"/admin/payments/payment/{payment.id}/change/")
    assert listing.status_code == detail.status_code == 200
    assert payment.id in listing.content.decode()
    assert "payment.captured" in detail.content.decode()
    assert "AegisPay back office" in detail.content.decode()


def test_payments_cannot_be_edited_or_deleted(staff: Client) -> None:
    payment = payment_in(make_client().merchant, "authorized")
    post = staff.post(f"/admin/payments/payment/{payment.id}/change/", {"amount": 1})
    delete = staff.post(f"/admin/payments/payment/{payment.id}/delete/", {"post": "yes"})
    add = staff.get("/admin/payments/payment/add/")
    assert post.status_code == 403
    assert delete.status_code == 403
    assert add.status_code == 403
    assert payment.__class__.objects.get(pk=payment.id).amount == 1000


def test_the_detail_shows_each_attempts_routing_decision(staff: Client) -> None:
    from gateways.health import gateway_available
    from payments.gateway import authorize_plan

    payment = payment_in(make_client(strategy="priority").merchant, "initiated")
    authorize_plan(payment_id=payment.id, fence="test", available=gateway_available)
    detail = staff.get(f"/admin/payments/payment/{payment.id}/change/").content.decode()
    assert "&quot;strategy&quot;: &quot;priority&quot;" in detail
    assert "&quot;candidates&quot;" in detail


def test_the_list_shows_amounts_by_the_currency_exponent(staff: Client, merchant: Merchant) -> None:
    yen = payment_create(
        merchant=merchant,
        amount=1500,
        currency="JPY",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    dinar = payment_create(
        merchant=merchant,
        amount=1234567,
        currency="KWD",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    page = staff.get("/admin/payments/payment/").content.decode()
    assert yen.id in page
    assert dinar.id in page
    assert "1,500 JPY" in page
    assert "1,234.567 KWD" in page


def test_the_timeline_shows_every_event_with_its_actor_and_states(
    viewer: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "completed")
    page = viewer.get(change_url(payment)).content.decode()
    rows = re.findall(
        r'<tr class="timeline-event" id="event-(\d+)" data-type="([^"]+)" data-actor="([^"]+)">',
        page,
    )
    assert rows == [
        ("1", "payment.initiated", "test"),
        ("2", "payment.processing", "test"),
        ("3", "payment.authorized", "test"),
        ("4", "payment.captured", "test"),
        ("5", "payment.completed", "test"),
    ]
    assert '<td class="event-from">authorized</td>' in page
    assert '<td class="event-to">captured</td>' in page
    assert "&quot;amount_captured&quot;: 1000" in page


def test_the_detail_shows_refunds_and_the_webhook_deliveries_of_its_events(
    viewer: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "completed")
    refund = Refund.objects.create(payment=payment, amount=300, currency="USD", reason="damaged")
    event = PaymentEvent.objects.get(payment=payment, sequence=5)
    endpoint = WebhookEndpoint.objects.create(
        merchant_id=merchant.id, url="https://hooks.example.com/aegis", events=["*"], secret="s"
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=event.id,
        event_type=event.type,
        aggregate_id=payment.id,
        payload={},
        status=WebhookDelivery.Status.FAILED,
        attempts=7,
        last_status_code=503,
    )
    other = payment_in(merchant, "completed")
    WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=PaymentEvent.objects.get(payment=other, sequence=5).id,
        event_type="payment.completed",
        aggregate_id=other.id,
        payload={},
    )
    page = viewer.get(change_url(payment)).content.decode()
    assert f'id="refund-{refund.id}" data-status="pending"' in page
    assert '<td class="refund-amount">3.00 USD</td>' in page
    assert re.findall(r'class="webhook-delivery" id="delivery-(\d+)"', page) == [str(delivery.pk)]
    assert '<td class="delivery-status-code">503</td>' in page
    assert '<td class="delivery-attempts">7</td>' in page
    assert "https://hooks.example.com/aegis" in page


def test_the_detail_page_query_count_does_not_grow_with_events(
    viewer: Client, merchant: Merchant
) -> None:
    short = payment_in(merchant, "initiated")
    long = payment_in(merchant, "refunded")
    viewer.get(change_url(short))  # warms the content-type cache the admin fills once
    with CaptureQueriesContext(connection) as few:
        assert viewer.get(change_url(short)).status_code == 200
    with CaptureQueriesContext(connection) as many:
        assert viewer.get(change_url(long)).status_code == 200
    assert len(many) == len(few)


# --- the list: filters, search, pagination, query counts ---


def test_list_filters_find_the_right_payments(staff: Client) -> None:
    acme = make_client("Acme").merchant
    other = make_client("Other").merchant
    failed = payment_in(acme, "failed")
    authorized = payment_in(acme, "authorized")
    on_b = payment_transition(
        payment_id=payment_in(other, "initiated").id,
        transition="start_processing",
        actor="test",
        changes={"gateway": "sandbox_b"},
    )
    euro = payment_create(
        merchant=other,
        amount=500,
        currency="EUR",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
    )
    old = payment_in(acme, "initiated")
    Payment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=400))
    # What the admin's "Today" link sends: local midnight to the next one, with the offset.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)

    def ids(**query: str) -> set[str]:
        return set(listed(staff.get("/admin/payments/payment/", query)))

    assert ids(status__exact="failed") == {failed.id}
    assert ids(merchant__id__exact=other.id) == {on_b.id, euro.id}
    assert ids(gateway__exact="sandbox_b") == {on_b.id}
    assert ids(gateway__exact="sandbox_a") == {authorized.id}
    assert ids(currency__exact="eur") == {euro.id}
    assert ids(created_at__gte=str(today), created_at__lt=str(tomorrow)) == {
        failed.id,
        authorized.id,
        on_b.id,
        euro.id,
    }
    assert ids(merchant__id__exact=acme.id, status__exact="authorized") == {authorized.id}


def test_the_merchant_and_currency_filters_are_inputs_not_lists(
    staff: Client, merchant: Merchant
) -> None:
    payment_in(merchant, "initiated")
    page = staff.get("/admin/payments/payment/?status__exact=initiated").content.decode()
    merchant_form = re.search(
        r'<form method="get" class="input-filter" id="filter-merchant">.*?</form>', page, re.S
    )
    assert merchant_form is not None
    assert '<input type="hidden" name="status__exact" value="initiated">' in merchant_form.group()
    assert '<input type="text" name="merchant__id__exact" value=""' in merchant_form.group()
    assert 'id="filter-currency"' in page
    assert merchant.id not in page.split('id="changelist-filter"')[1]


@pytest.mark.parametrize("kind", ["id", "merchant_reference", "gateway_reference", "email"])
def test_each_search_kind_finds_exactly_its_payment(
    staff: Client, merchant: Merchant, kind: str
) -> None:
    target = payment_in(
        merchant,
        "authorized",
        merchant_reference="order-4711",
        customer={"email": "Jane.Doe@Example.com"},
    )
    Payment.objects.filter(pk=target.pk).update(gateway_reference="gw_ref_123")
    payment_in(merchant, "authorized", merchant_reference="order-47", customer={"email": "j@x.io"})
    term = {
        "id": target.id,
        "merchant_reference": "order-4711",
        "gateway_reference": "gw_ref_123",
        "email": "jane.doe@example.COM",
    }[kind]
    assert listed(staff.get("/admin/payments/payment/", {"q": term})) == [target.id]


@pytest.mark.parametrize("term", ["order-47", "4711", "Jane", "gw_ref", "example.com"])
def test_search_is_exact_not_a_substring_scan(staff: Client, merchant: Merchant, term: str) -> None:
    payment_in(
        merchant,
        "initiated",
        merchant_reference="order-4711",
        customer={"email": "jane@example.com"},
    )
    assert listed(staff.get("/admin/payments/payment/", {"q": term})) == []


@pytest.mark.parametrize(
    ("term", "index"),
    [
        ("jane@example.com", "payment_customer_email_idx"),
        ("order-4711", "payment_reference_idx"),
        ("gw_ref_123", "payment_gateway_ref_idx"),
    ],
)
def test_the_search_is_served_by_its_indexes(rf: Any, term: str, index: str) -> None:
    model_admin = admin.site._registry[Payment]
    queryset, _ = model_admin.get_search_results(rf.get("/"), Payment.objects.all(), term)
    # Statistics fixed by ANALYZE, and the plan of the filter alone: with the admin's ORDER BY
    # on a near-empty table, a backward scan of the primary key filtering every row costs less
    # than the search indexes, so the plan used to flip whenever autovacuum had analysed it.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payments_payment")
        cursor.execute("SET LOCAL enable_seqscan = off")
    plan = queryset.order_by().explain()
    assert index in plan


def test_the_list_query_count_does_not_grow_with_rows(staff: Client) -> None:
    first = make_client("First").merchant
    for _ in range(2):
        payment_in(first, "authorized")
    with CaptureQueriesContext(connection) as few:
        assert staff.get("/admin/payments/payment/").status_code == 200
    for index in range(6):
        merchant = make_client(f"Merchant {index}").merchant
        for _ in range(3):
            payment_in(merchant, "authorized")
    with CaptureQueriesContext(connection) as many:
        response = staff.get("/admin/payments/payment/")
    assert len(listed(response)) == 20
    assert len(many) == len(few)


def test_the_list_never_counts_the_table(staff: Client, merchant: Merchant) -> None:
    for _ in range(3):
        payment_in(merchant, "failed")
    with CaptureQueriesContext(connection) as plain:
        staff.get("/admin/payments/payment/")
    with CaptureQueriesContext(connection) as filtered:
        staff.get("/admin/payments/payment/", {"status__exact": "failed", "q": "x@y.z"})
    sql = [query["sql"].upper() for query in [*plain.captured_queries, *filtered.captured_queries]]
    assert [statement for statement in sql if "COUNT(" in statement] == []
    assert any('FROM "PAYMENTS_PAYMENT"' in statement and "LIMIT" in statement for statement in sql)


def test_pages_link_previous_and_next_without_a_total(
    staff: Client, merchant: Merchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_admin = admin.site._registry[Payment]
    monkeypatch.setattr(model_admin, "list_per_page", 2)
    monkeypatch.setattr(model_admin, "list_max_show_all", 2)
    payments = [payment_in(merchant, "initiated") for _ in range(5)]
    newest_first = [payment.id for payment in reversed(payments)]
    first = staff.get("/admin/payments/payment/")
    second = staff.get("/admin/payments/payment/", {"p": 2})
    last = staff.get("/admin/payments/payment/", {"p": 3})
    beyond = staff.get("/admin/payments/payment/", {"p": 4})
    assert listed(first) == newest_first[:2]
    assert listed(second) == newest_first[2:4]
    assert listed(last) == newest_first[4:]
    assert 'class="pager-next"' in first.content.decode()
    assert 'class="pager-previous"' not in first.content.decode()
    assert 'class="pager-previous"' in last.content.decode()
    assert 'class="pager-next"' not in last.content.decode()
    assert beyond.status_code == 302


# --- roles ---


def test_the_migration_makes_operators_who_act_and_viewers_who_read(
    operator: Client, viewer: Client
) -> None:
    olga = User.objects.get(username="olga")
    victor = User.objects.get(username="victor")
    assert [olga.has_perm(name) for name in ACTION_PERMISSIONS] == [True] * 4
    assert [victor.has_perm(name) for name in ACTION_PERMISSIONS] == [False] * 4
    assert olga.has_perm("payments.view_payment") and victor.has_perm("payments.view_payment")
    assert victor.has_perm("webhooks.view_webhookdelivery")
    assert not olga.has_perm("payments.change_payment")
    assert not olga.has_perm("payments.delete_paymentevent")


def test_an_operator_sees_the_buttons_this_state_allows(
    operator: Client, merchant: Merchant
) -> None:
    failed = operator.get(change_url(payment_in(merchant, "failed"))).content.decode()
    authorized = operator.get(change_url(payment_in(merchant, "authorized"))).content.decode()
    completed = operator.get(change_url(payment_in(merchant, "completed"))).content.decode()
    assert re.findall(r'class="payment-action" id="action-(\w+)"', failed) == ["retry"]
    assert re.findall(r'class="payment-action" id="action-(\w+)"', authorized) == [
        "capture",
        "cancel",
    ]
    assert re.findall(r'class="payment-action" id="action-(\w+)"', completed) == ["refund"]
    assert ">Retry payment</a>" in failed


def test_the_list_links_to_the_payment_page_and_its_actions(
    operator: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "failed")
    listing = operator.get("/admin/payments/payment/").content.decode()
    link = re.search(r'<th class="field-id"><a href="([^"]+)">' + payment.id, listing)
    assert link is not None
    detail = operator.get(link.group(1)).content.decode()
    retry = re.search(r'<a href="([^"]+)" class="payment-action" id="action-retry">', detail)
    assert retry is not None
    confirm = operator.get(retry.group(1))
    assert confirm.context["payment"].pk == payment.pk
    assert f'id="payment-version">Version {payment.version} · failed<' in detail


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("failed", "retry"),
        ("completed", "refund"),
        ("authorized", "capture"),
        ("authorized", "cancel"),
    ],
)
def test_a_viewer_reads_but_may_not_act(
    viewer: Client, merchant: Merchant, status: str, action: str
) -> None:
    payment = payment_in(merchant, status)
    listing = viewer.get("/admin/payments/payment/")
    detail = viewer.get(change_url(payment))
    confirm = viewer.get(action_url(payment, action))
    post = viewer.post(action_url(payment, action), {"version": payment.version})
    assert (listing.status_code, detail.status_code) == (200, 200)
    assert 'class="payment-action"' not in detail.content.decode()
    assert action_url(payment, action) not in detail.content.decode()
    assert (confirm.status_code, post.status_code) == (403, 403)
    assert Payment.objects.get(pk=payment.pk).version == payment.version


def test_staff_in_no_group_are_refused(merchant: Merchant) -> None:
    nobody = login("nora", None)
    payment = payment_in(merchant, "failed")
    assert nobody.get("/admin/payments/payment/").status_code == 403
    assert nobody.get(change_url(payment)).status_code == 403
    assert (
        nobody.post(action_url(payment, "retry"), {"version": payment.version}).status_code == 403
    )
    assert Payment.objects.get(pk=payment.pk).status == "failed"


def test_anonymous_users_are_sent_to_the_login_page(client: Client, merchant: Merchant) -> None:
    payment = payment_in(merchant, "failed")
    response = client.post(action_url(payment, "retry"), {"version": payment.version})
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert Payment.objects.get(pk=payment.pk).status == "failed"


def test_an_action_post_without_the_csrf_token_is_refused(merchant: Merchant) -> None:
    client = login("olga", "operators", client=Client(enforce_csrf_checks=True))
    payment = payment_in(merchant, "failed")
    response = client.post(action_url(payment, "retry"), {"version": payment.version})
    assert response.status_code == 403
    assert Payment.objects.get(pk=payment.pk).status == "failed"


# --- actions ---


@pytest.mark.parametrize(
    ("status", "action", "confirm"),
    [
        ("failed", "retry", "Yes, retry this payment"),
        ("completed", "refund", "Yes, refund"),
        ("authorized", "capture", "Yes, capture"),
        ("authorized", "cancel", "Yes, cancel this payment"),
    ],
)
def test_the_confirmation_page_writes_nothing(
    operator: Client, merchant: Merchant, status: str, action: str, confirm: str
) -> None:
    payment = payment_in(merchant, status)
    outbox_before = OutboxMessage.objects.count()
    page = operator.get(action_url(payment, action))
    assert page.status_code == 200
    assert f'value="{confirm}" id="confirm-action"' in page.content.decode()
    assert f'<input type="hidden" name="version" value="{payment.version}"' in page.content.decode()
    assert Payment.objects.get(pk=payment.pk).version == payment.version
    assert OutboxMessage.objects.count() == outbox_before
    assert PaymentAttempt.objects.filter(payment=payment).count() == 0


def test_the_amount_fields_say_which_unit_they_take(operator: Client, merchant: Merchant) -> None:
    refund = operator.get(action_url(payment_in(merchant, "completed"), "refund")).content.decode()
    capture = operator.get(
        action_url(payment_in(merchant, "authorized"), "capture")
    ).content.decode()
    assert "Amount in USD, major units (e.g. 12.34)" in refund
    assert 'name="reason"' in refund
    assert "Amount in USD, major units (e.g. 12.34)" in capture


class QueuedTask:
    """Stands in for a Celery task: records what would have been sent to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def delay(self, *args: Any) -> None:
        self.sent.append(args)


def test_an_operator_retries_a_failed_payment(
    operator: Client,
    merchant: Merchant,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = QueuedTask()
    monkeypatch.setattr(tasks, "payment_process", process)
    payment = payment_in(merchant, "failed")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            action_url(payment, "retry"), {"version": payment.version}, follow=True
        )
    after = Payment.objects.get(pk=payment.pk)
    event = PaymentEvent.objects.get(payment=payment, sequence=after.version)
    assert response.redirect_chain[-1][0] == change_url(payment)
    assert shown_messages(response) == [
        f"Payment {payment.id} is initiated again; processing is queued."
    ]
    assert (after.status, after.failure_code, after.version) == (
        "initiated",
        "",
        payment.version + 1,
    )
    assert (event.type, event.from_status, event.to_status, event.actor) == (
        "payment.initiated",
        "failed",
        "initiated",
        "staff:olga",
    )
    assert OutboxMessage.objects.filter(event_id=event.id, event_type="payment.initiated").exists()
    assert [args[0] for args in process.sent] == [payment.id]


def test_an_operator_refunds_part_of_a_completed_payment(
    operator: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "completed")
    response = operator.post(
        action_url(payment, "refund"),
        {"version": payment.version, "amount": "2.50", "reason": "damaged in transit"},
        follow=True,
    )
    refund = Refund.objects.get(payment=payment)
    after = Payment.objects.get(pk=payment.pk)
    new_events = events_of(payment)[payment.version :]
    assert shown_messages(response) == [f"Refund {refund.id} of 2.50 USD started for {payment.id}."]
    assert (refund.amount, refund.reason, refund.status) == (250, "damaged in transit", "pending")
    assert after.status == "refund_initiated"
    assert new_events == [
        ("refund.created", "staff:olga"),
        ("payment.refund_initiated", "staff:olga"),
    ]
    assert OutboxMessage.objects.filter(aggregate_id=payment.id).count() == after.version
    assert (
        LogEntry.objects.get(object_id=payment.id).get_change_message()
        == (shown_messages(response)[0])
    )


def test_an_empty_refund_amount_refunds_everything_left(
    operator: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "partially_refunded")
    operator.post(action_url(payment, "refund"), {"version": payment.version, "amount": ""})
    assert Refund.objects.get(payment=payment).amount == 900


def test_an_operator_captures_part_of_an_authorised_payment(
    operator: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "authorized")
    response = operator.post(
        action_url(payment, "capture"), {"version": payment.version, "amount": "4"}, follow=True
    )
    attempt = PaymentAttempt.objects.get(payment=payment, operation="capture")
    after = Payment.objects.get(pk=payment.pk)
    event = PaymentEvent.objects.get(payment=payment, sequence=after.version)
    assert shown_messages(response) == [f"Capture of 4.00 USD requested for {payment.id}."]
    assert (attempt.amount, attempt.status) == (400, "pending")
    assert (event.type, event.actor, event.data["attempt"], event.data["amount"]) == (
        "payment.capture_requested",
        "staff:olga",
        attempt.id,
        400,
    )
    assert after.status == "authorized"
    assert OutboxMessage.objects.filter(event_id=event.id).exists()


@pytest.mark.parametrize(
    ("status", "event_type", "status_after", "message"),
    [
        (
            "authorized",
            "payment.cancel_requested",
            "authorized",
            "Cancellation of {id} requested: the authorisation is being voided.",
        ),
        ("initiated", "payment.cancelled", "cancelled", "Payment {id} is cancelled."),
    ],
)
def test_an_operator_cancels_a_payment(
    operator: Client,
    merchant: Merchant,
    status: str,
    event_type: str,
    status_after: str,
    message: str,
) -> None:
    payment = payment_in(merchant, status)
    response = operator.post(
        action_url(payment, "cancel"), {"version": payment.version}, follow=True
    )
    after = Payment.objects.get(pk=payment.pk)
    event = PaymentEvent.objects.get(payment=payment, sequence=after.version)
    assert shown_messages(response) == [message.format(id=payment.id)]
    assert (after.status, event.type, event.actor) == (status_after, event_type, "staff:olga")
    assert OutboxMessage.objects.filter(event_id=event.id).exists()


@pytest.mark.parametrize(
    ("status", "action", "data", "message"),
    [
        (
            "completed",
            "retry",
            {},
            "Retry payment refused: cannot retry a payment that is completed. Nothing was done.",
        ),
        (
            "completed",
            "refund",
            {"amount": "10.01"},
            "Refund payment refused: amount may be at most the 1000 not yet refunded (amounts "
            "in this message are minor units of USD). Nothing was done.",
        ),
        (
            "failed",
            "capture",
            {},
            "Capture payment refused: cannot capture a payment that is failed. Nothing was done.",
        ),
        (
            "completed",
            "cancel",
            {},
            "Cancel payment refused: cannot cancel a payment that is completed. Nothing was done.",
        ),
    ],
)
def test_actions_the_state_machine_forbids_are_refused_and_write_nothing(
    operator: Client, merchant: Merchant, status: str, action: str, data: dict, message: str
) -> None:
    payment = payment_in(merchant, status)
    outbox_before = OutboxMessage.objects.count()
    response = operator.post(
        action_url(payment, action), {"version": payment.version, **data}, follow=True
    )
    after = Payment.objects.get(pk=payment.pk)
    assert response.redirect_chain[-1][0] == change_url(payment)
    assert shown_messages(response) == [message]
    assert (after.status, after.version) == (payment.status, payment.version)
    assert PaymentEvent.objects.filter(payment=payment).count() == payment.version
    assert OutboxMessage.objects.count() == outbox_before
    assert Refund.objects.filter(payment=payment).count() == 0
    assert PaymentAttempt.objects.filter(payment=payment).count() == 0


def test_a_payment_that_changed_since_the_page_was_shown_is_refused(
    operator: Client, merchant: Merchant
) -> None:
    payment = payment_in(merchant, "authorized")
    shown = operator.get(action_url(payment, "cancel")).context["form"].initial["version"]
    payment_transition(payment_id=payment.id, transition="expire", actor="system")
    response = operator.post(action_url(payment, "cancel"), {"version": shown}, follow=True)
    after = Payment.objects.get(pk=payment.pk)
    assert shown_messages(response) == [
        f"Payment {payment.id} changed since you looked (you confirmed version {shown}, it is "
        f"now at version {shown + 1}). Nothing was done; review it and try again."
    ]
    assert (after.status, after.version) == ("expired", shown + 1)
    assert PaymentAttempt.objects.filter(payment=payment).count() == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"amount": "2.505"}, "USD has 2 decimal place(s); this amount has more."),
        ({"amount": "ten"}, "Enter an amount such as 12.34 USD."),
        ({"amount": "-1"}, "Enter an amount above zero."),
        ({"amount": "0"}, "Enter an amount above zero."),
        ({"amount": "99999999999"}, "amount may be at most 1000000000000 minor units of USD"),
    ],
)
def test_invalid_input_shows_the_form_again_and_writes_nothing(
    operator: Client, merchant: Merchant, data: dict, error: str
) -> None:
    payment = payment_in(merchant, "completed")
    response = operator.post(action_url(payment, "refund"), {"version": payment.version, **data})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert Refund.objects.count() == 0
    assert Payment.objects.get(pk=payment.pk).version == payment.version


def test_a_post_without_the_version_shown_is_refused(operator: Client, merchant: Merchant) -> None:
    payment = payment_in(merchant, "completed")
    response = operator.post(action_url(payment, "refund"), {"amount": "1"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert Refund.objects.count() == 0


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("12.34", "USD", 1234), ("1,000", "JPY", 1000), ("1.234", "KWD", 1234), ("7", "EUR", 700)],
)
def test_major_units_become_minor_units_by_the_currency_exponent(
    text: str, currency: str, minor: int
) -> None:
    assert parse_major_amount(text, currency) == minor


@pytest.mark.django_db(transaction=True)
def test_a_retry_queues_processing_only_after_it_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    process = QueuedTask()
    monkeypatch.setattr(tasks, "payment_process", process)
    operator = login("olga", "operators")
    payment = payment_in(make_client().merchant, "failed")
    process.sent.clear()
    response = operator.post(action_url(payment, "retry"), {"version": payment.version})
    event = PaymentEvent.objects.get(payment=payment, sequence=payment.version + 1)
    assert response.status_code == 302
    assert (event.type, event.actor) == ("payment.initiated", "staff:olga")
    assert [args[0] for args in process.sent] == [payment.id]


def test_the_payment_admin_is_registered_read_only() -> None:
    model_admin = admin.site._registry[Payment]
    assert isinstance(model_admin, PaymentAdmin)
    assert model_admin.show_full_result_count is False
    assert model_admin.actions is None
