"""A payment through the API, a real Celery worker process and the sandbox gateway."""

from __future__ import annotations

import json
import subprocess

import pytest

from gateways.sandbox.ledger import charge_count, ledger_entries
from payments.models import Payment, PaymentAttempt
from tests.conftest import VISA, MerchantClient, make_client
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TERMINAL = {"completed", "failed", "cancelled", "expired", "refunded"}


def pay(api: MerchantClient, token: str) -> str:
    body = {**VISA, "payment_method": {"type": "card", "token": token}}
    response = api.post("/v1/payments", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201
    return response.json()["id"]


def settled(api: MerchantClient, payment_id: str) -> dict:
    return wait_until(
        lambda: (p := api.get(f"/v1/payments/{payment_id}").json())["status"] in TERMINAL and p,
        timeout=60,
    )


def event_types(api: MerchantClient, payment_id: str) -> list[str]:
    return [e["type"] for e in api.get(f"/v1/payments/{payment_id}/events").json()["data"]]


def test_tok_visa_goes_to_completed(worker: subprocess.Popen) -> None:
    api = make_client(strategy="priority")
    payment_id = pay(api, "tok_visa")
    payment = settled(api, payment_id)
    assert payment["status"] == "completed"
    assert (payment["amount_authorized"], payment["amount_captured"]) == (2000, 2000)
    assert payment["payment_method"] == {
        "type": "card",
        "token": "tok_visa",
        "brand": "visa",
        "last4": "4242",
    }
    assert payment["gateway"] == "sandbox_a"
    assert event_types(api, payment_id) == [
        "payment.initiated",
        "payment.processing",
        "payment.authorized",
        "payment.captured",
        "payment.completed",
    ]
    assert charge_count(payment_id) == 1
    assert [e.operation for e in ledger_entries(order_reference=payment_id)] == [
        "authorize",
        "capture",
    ]


def test_tok_charge_declined_fails_without_retry(worker: subprocess.Popen) -> None:
    api = make_client()
    payment_id = pay(api, "tok_chargeDeclined")
    payment = settled(api, payment_id)
    assert payment["status"] == "failed"
    assert payment["failure"]["code"] == "card_declined"
    assert event_types(api, payment_id) == [
        "payment.initiated",
        "payment.processing",
        "payment.failed",
    ]
    assert list(PaymentAttempt.objects.filter(payment_id=payment_id).values_list("status")) == [
        ("declined",)
    ]
    assert charge_count(payment_id) == 0


def test_manual_capture_stops_at_authorized(worker: subprocess.Popen) -> None:
    api = make_client()
    body = {**VISA, "capture_method": "manual"}
    payment_id = api.post(
        "/v1/payments", data=json.dumps(body), content_type="application/json"
    ).json()["id"]
    payment = wait_until(
        lambda: Payment.objects.filter(pk=payment_id, status="authorized").first(), timeout=60
    )
    assert (payment.amount_authorized, payment.amount_captured) == (2000, 0)
    assert payment.authorization_expires_at is not None


def test_tok_processing_error_is_retried_on_new_attempts(worker: subprocess.Popen) -> None:
    api = make_client(strategy="priority")
    payment_id = pay(api, "tok_processingError")
    payment = settled(api, payment_id)
    attempts = list(
        PaymentAttempt.objects.filter(payment_id=payment_id, operation="authorize").values_list(
            "gateway", "status"
        )
    )
    assert payment["status"] == "completed"
    assert attempts == [
        ("sandbox_a", "error"),
        ("sandbox_b", "error"),
        ("sandbox_a", "succeeded"),
    ]
    assert charge_count(payment_id) == 1


def test_tok_timeout_is_looked_up_not_charged_twice(worker: subprocess.Popen) -> None:
    api = make_client()
    payment_id = pay(api, "tok_timeout")
    payment = settled(api, payment_id)
    assert payment["status"] == "completed"
    assert charge_count(payment_id) == 1
    assert PaymentAttempt.objects.filter(payment_id=payment_id, operation="authorize").count() == 1
