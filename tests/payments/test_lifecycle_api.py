"""Capture, cancel and refund requests through the API: what is accepted, what is refused,
and that refused requests change nothing. (Gateway calls run in Celery; see test_lifecycle.)"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from payments.errors import AmountExceeded, InvalidTransition
from payments.models import Payment, PaymentAttempt, Refund
from payments.services import refund_create
from tests.conftest import MerchantClient, make_client
from tests.payments.helpers import payment_in


def post(api: MerchantClient, path: str, body: dict | None = None, **headers: str):
    return api.post(path, data=json.dumps(body or {}), content_type="application/json", **headers)


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "action", "body"),
    [
        ("initiated", "capture", {}),
        ("completed", "capture", {}),
        ("failed", "cancel", {}),
        ("captured", "cancel", {}),
        ("authorized", "refunds", {}),
        ("refund_initiated", "refunds", {"amount": 1}),
        ("refunded", "refunds", {}),
    ],
)
def test_actions_refused_by_the_state_machine_are_409(
    api: MerchantClient, status: str, action: str, body: dict
) -> None:
    payment = payment_in(api.merchant, status)
    response = post(api, f"/v1/payments/{payment.id}/{action}", body)
    assert error(response) == (409, "invalid_state_transition")
    assert Payment.objects.get(pk=payment.id).version == payment.version
    assert Refund.objects.count() == 0


@pytest.mark.django_db
def test_capture_opens_one_attempt_and_a_second_is_in_progress(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    first = post(api, f"/v1/payments/{payment.id}/capture", {"amount": 400})
    second = post(api, f"/v1/payments/{payment.id}/capture")
    attempt = PaymentAttempt.objects.get(payment=payment, operation="capture")
    assert first.status_code == 200
    assert first.json()["status"] == "authorized"
    assert (attempt.amount, attempt.status) == (400, "pending")
    assert error(second) == (409, "operation_in_progress")


@pytest.mark.django_db
def test_cancel_of_an_initiated_payment_is_immediate(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "initiated")
    response = post(api, f"/v1/payments/{payment.id}/cancel")
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")


@pytest.mark.django_db
def test_refund_records_its_events_and_moves_to_refund_initiated(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "completed")
    response = post(api, f"/v1/payments/{payment.id}/refunds", {"amount": 250, "reason": "late"})
    events = api.get(f"/v1/payments/{payment.id}/events").json()["data"]
    refund = response.json()
    assert response.status_code == 201
    assert (refund["object"], refund["amount"], refund["status"]) == ("refund", 250, "pending")
    assert refund["id"].startswith("re_")
    assert [e["type"] for e in events[-2:]] == ["refund.created", "payment.refund_initiated"]
    assert Payment.objects.get(pk=payment.id).status == "refund_initiated"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "action", "body", "code"),
    [
        ("authorized", "capture", {"amount": 0}, "amount_invalid"),
        ("authorized", "capture", {"amount": "1"}, "amount_invalid"),
        ("authorized", "capture", {"reason": "x"}, "parameter_unknown"),
        ("authorized", "cancel", {"amount": 5}, "parameter_unknown"),
        ("completed", "refunds", {"amount": -1}, "amount_invalid"),
        ("completed", "refunds", {"reason": 5}, "reason_invalid"),
    ],
)
def test_bad_bodies_are_400(
    api: MerchantClient, status: str, action: str, body: dict, code: str
) -> None:
    payment = payment_in(api.merchant, status)
    assert error(post(api, f"/v1/payments/{payment.id}/{action}", body)) == (400, code)
    assert Payment.objects.get(pk=payment.id).version == payment.version


@pytest.mark.django_db
def test_refund_above_what_is_left_is_422(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "partially_refunded")
    response = post(api, f"/v1/payments/{payment.id}/refunds", {"amount": 901})
    assert error(response) == (422, "amount_exceeded")


@pytest.mark.django_db
def test_if_match_checks_the_version(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    stale = post(api, f"/v1/payments/{payment.id}/cancel", HTTP_IF_MATCH=str(payment.version - 1))
    bad = post(api, f"/v1/payments/{payment.id}/cancel", HTTP_IF_MATCH="latest")
    current = post(api, f"/v1/payments/{payment.id}/cancel", HTTP_IF_MATCH=f'"{payment.version}"')
    assert error(stale) == (409, "version_conflict")
    assert error(bad) == (400, "if_match_invalid")
    assert current.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["\u00b2", '"3', "3 4"])
def test_if_match_is_a_version_in_ascii_digits(api: MerchantClient, value: str) -> None:
    # "²" is a digit to str.isdigit() but not to int(): a 500 before. A lone quote was read
    # as a quoted version.
    payment = payment_in(api.merchant, "authorized")
    response = post(api, f"/v1/payments/{payment.id}/cancel", HTTP_IF_MATCH=value)
    assert error(response) == (400, "if_match_invalid")
    assert Payment.objects.get(pk=payment.id).version == payment.version


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "action"), [("authorized", "capture"), ("completed", "refunds")]
)
def test_an_amount_above_the_currencys_bound_exceeds_the_payment(
    api: MerchantClient, status: str, action: str
) -> None:
    # Any amount above USD's bound is above what the payment holds: 422 amount_exceeded, as for
    # any other amount above it. It was 400 amount_too_large, an answer the schema could not
    # describe (a capture's schema cannot know the payment's currency): schemathesis found it.
    payment = payment_in(api.merchant, status)
    response = post(api, f"/v1/payments/{payment.id}/{action}", {"amount": 10**12 + 1})
    assert error(response) == (422, "amount_exceeded")
    assert Payment.objects.get(pk=payment.id).version == payment.version


@pytest.mark.django_db
def test_another_merchants_payment_cannot_be_acted_on(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    payment = payment_in(api.merchant, "completed")
    refund = post(other_api, f"/v1/payments/{payment.id}/refunds")
    listing = other_api.get(f"/v1/payments/{payment.id}/refunds")
    assert error(refund) == error(listing) == (404, "resource_missing")


@pytest.mark.django_db(transaction=True)
def test_racing_refund_requests_start_one_refund_at_a_time() -> None:
    """Ten threads on ten connections ask for a refund at once: one wins, the others are
    refused by the payment's row lock and state, never over the captured amount."""
    payment = payment_in(make_client().merchant, "completed")
    barrier = threading.Barrier(10)

    def attempt(_: int) -> str:
        try:
            barrier.wait(timeout=10)
            refund_create(payment_id=payment.id, actor="test", amount=300)
        except (InvalidTransition, AmountExceeded) as exc:
            return type(exc).__name__
        finally:
            connections.close_all()
        return "created"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = sorted(pool.map(attempt, range(10)))
    assert outcomes == ["InvalidTransition"] * 9 + ["created"]
    assert list(Refund.objects.values_list("amount", flat=True)) == [300]


@pytest.mark.django_db
def test_an_open_breaker_sends_the_first_attempt_to_the_next_gateway() -> None:
    from gateways.breaker import breaker_for
    from gateways.health import gateway_available
    from payments.gateway import authorize_plan

    breaker = breaker_for("sandbox_a")
    for _ in range(20):
        breaker.record_failure()
    merchant = make_client(gateways=["sandbox_a", "sandbox_b"], strategy="priority").merchant
    payment = payment_in(merchant, "initiated")
    plan = authorize_plan(payment_id=payment.id, fence="test", available=gateway_available)
    attempt = PaymentAttempt.objects.get(pk=plan.reference)
    assert breaker.state() == "open"
    assert plan.gateway == "sandbox_b"
    assert attempt.routing_decision["excluded"] == [
        {"gateway": "sandbox_a", "reason": "breaker_open"}
    ]


@pytest.mark.django_db
def test_no_available_gateway_fails_the_payment_with_the_reason() -> None:
    from gateways.breaker import breaker_for
    from gateways.health import gateway_available
    from payments.gateway import authorize_plan

    for _ in range(20):
        breaker_for("sandbox_a").record_failure()
    payment = payment_in(make_client(gateways=["sandbox_a"]).merchant, "initiated")
    plan = authorize_plan(payment_id=payment.id, fence="test", available=gateway_available)
    stored = Payment.objects.get(pk=payment.id)
    event = stored.events.order_by("-sequence").first()
    assert plan is None
    assert (stored.status, stored.failure_code) == ("failed", "no_gateway_available")
    assert event.data["routing"]["excluded"] == [{"gateway": "sandbox_a", "reason": "breaker_open"}]
