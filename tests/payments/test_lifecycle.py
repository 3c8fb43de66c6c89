"""The whole lifecycle through the API, real Celery worker processes and the sandbox gateway:
partial capture, refunds, cancel, expiry and settlement by beat tasks, manual retry, races,
a worker killed mid-call, and fallback to a second gateway."""

from __future__ import annotations

import json
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from gateways.sandbox.ledger import charge_count, ledger_entries
from payments.models import Payment, PaymentAttempt
from payments.services import payment_retry
from payments.tasks import (
    payments_expire_authorizations,
    payments_reconcile,
    payments_settle_captures,
)
from tests.conftest import VISA, MerchantClient, WorkerFactory, make_client
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def post(api: MerchantClient, path: str, body: dict | None = None, **headers: str):
    return api.post(path, data=json.dumps(body or {}), content_type="application/json", **headers)


def pay(api: MerchantClient, token: str = "tok_visa", **fields: object) -> str:
    body = {**VISA, "payment_method": {"type": "card", "token": token}, **fields}
    response = post(api, "/v1/payments", body)
    assert response.status_code == 201
    return response.json()["id"]


def reaches(payment_id: str, status: str, timeout: float = 60) -> Payment:
    return wait_until(
        lambda: Payment.objects.filter(pk=payment_id, status=status).first(), timeout=timeout
    )


def amounts(operation: str, payment_id: str) -> list[int]:
    return [e.amount for e in ledger_entries(order_reference=payment_id, operation=operation)]


def test_partial_capture_then_settlement_by_beat(worker: object) -> None:
    api = make_client()
    payment_id = pay(api, capture_method="manual")
    reaches(payment_id, "authorized")
    response = post(api, f"/v1/payments/{payment_id}/capture", {"amount": 1200})
    captured = reaches(payment_id, "captured")
    settled = payments_settle_captures()
    assert response.status_code == 200
    assert (captured.amount_authorized, captured.amount_captured) == (2000, 1200)
    assert settled == 1
    assert Payment.objects.get(pk=payment_id).status == "completed"
    assert amounts("capture", payment_id) == [1200]


def test_capture_above_the_authorization_is_refused(worker: object) -> None:
    api = make_client()
    payment_id = pay(api, capture_method="manual")
    reaches(payment_id, "authorized")
    response = post(api, f"/v1/payments/{payment_id}/capture", {"amount": 2001})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "amount_exceeded")
    assert PaymentAttempt.objects.filter(payment_id=payment_id, operation="capture").count() == 0


def test_racing_captures_capture_once(worker: object) -> None:
    api = make_client()
    payment_id = pay(api, capture_method="manual")
    reaches(payment_id, "authorized")
    barrier = threading.Barrier(8)

    def capture(_: int) -> int:
        try:
            barrier.wait(timeout=10)
            return post(api, f"/v1/payments/{payment_id}/capture").status_code
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(capture, range(8)))
    reaches(payment_id, "captured")
    assert sorted(codes) == [200] + [409] * 7
    assert amounts("capture", payment_id) == [2000]


def test_several_partial_refunds_up_to_the_captured_amount(worker: object) -> None:
    api = make_client()
    payment_id = pay(api)
    reaches(payment_id, "completed")
    first = post(api, f"/v1/payments/{payment_id}/refunds", {"amount": 500, "reason": "damaged"})
    reaches(payment_id, "partially_refunded")
    second = post(api, f"/v1/payments/{payment_id}/refunds", {"amount": 700})
    wait_until(lambda: Payment.objects.get(pk=payment_id).amount_refunded == 1200)
    too_much = post(api, f"/v1/payments/{payment_id}/refunds", {"amount": 801})
    rest = post(api, f"/v1/payments/{payment_id}/refunds")
    refunded = reaches(payment_id, "refunded")
    listed = api.get(f"/v1/payments/{payment_id}/refunds").json()["data"]
    assert (first.status_code, second.status_code, rest.status_code) == (201, 201, 201)
    assert first.json()["reason"] == "damaged"
    assert (too_much.status_code, too_much.json()["error"]["code"]) == (422, "amount_exceeded")
    assert rest.json()["amount"] == 800
    assert refunded.amount_refunded == refunded.amount_captured == 2000
    assert [r["status"] for r in listed] == ["succeeded"] * 3
    assert sorted(amounts("refund", payment_id)) == [500, 700, 800]


def test_racing_refunds_never_exceed_the_captured_amount(worker: object) -> None:
    api = make_client()
    payment_id = pay(api)
    reaches(payment_id, "completed")

    def refund_until_nothing_is_left(_: int) -> int:
        codes: list[int] = []

        def refund_once() -> bool:
            codes.append(
                post(api, f"/v1/payments/{payment_id}/refunds", {"amount": 300}).status_code
            )
            return codes[-1] == 422  # nothing left to refund

        try:
            wait_until(refund_once, timeout=60, interval=0.01)
        finally:
            connections.close_all()
        return codes.count(201)

    with ThreadPoolExecutor(max_workers=6) as pool:
        created = sum(pool.map(refund_until_nothing_is_left, range(6)))
    final = wait_until(
        lambda: (p := Payment.objects.get(pk=payment_id)).status != "refund_initiated" and p
    )
    assert created == 6
    assert final.amount_refunded == 1800 <= final.amount_captured
    assert sum(amounts("refund", payment_id)) == 1800
    assert final.status == "partially_refunded"


def test_cancel_voids_the_authorization(worker: object) -> None:
    api = make_client()
    payment_id = pay(api, capture_method="manual")
    reaches(payment_id, "authorized")
    response = post(api, f"/v1/payments/{payment_id}/cancel")
    cancelled = reaches(payment_id, "cancelled")
    again = post(api, f"/v1/payments/{payment_id}/cancel")
    assert response.status_code == 200
    assert cancelled.amount_captured == 0
    assert len(ledger_entries(order_reference=payment_id, operation="void")) == 1
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_state_transition")


def test_expiry_by_beat_expires_and_voids(worker: object) -> None:
    api = make_client()
    payment_id = pay(api, capture_method="manual")
    reaches(payment_id, "authorized")
    Payment.objects.filter(pk=payment_id).update(
        authorization_expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = payments_expire_authorizations()
    wait_until(lambda: ledger_entries(order_reference=payment_id, operation="void"))
    assert expired == 1
    assert Payment.objects.get(pk=payment_id).status == "expired"
    assert post(api, f"/v1/payments/{payment_id}/capture").status_code == 409


def test_manual_retry_processes_again_with_a_new_attempt(start_worker: WorkerFactory) -> None:
    start_worker(GATEWAY_MAX_RETRIES="0")
    api = make_client(gateways=["sandbox_a"])
    payment_id = pay(api, "tok_processingError")
    failed = reaches(payment_id, "failed")
    payment_retry(payment_id=payment_id, actor="staff:ops")
    reaches(payment_id, "failed", timeout=30)
    wait_until(lambda: PaymentAttempt.objects.filter(payment_id=payment_id).count() == 2)
    payment_retry(payment_id=payment_id, actor="staff:ops")
    completed = reaches(payment_id, "completed")
    attempts = list(
        PaymentAttempt.objects.filter(payment_id=payment_id, operation="authorize").values_list(
            "number", "status"
        )
    )
    assert failed.failure_code == "processing_error"
    assert attempts == [(1, "error"), (2, "error"), (3, "succeeded")]
    assert completed.failure_code == ""
    assert charge_count(payment_id) == 1


def test_a_worker_killed_mid_call_ends_with_one_charge(start_worker: WorkerFactory) -> None:
    # The killed worker's lock and its attempt's next check both fall due after the lock's
    # lifetime: 3 x 2 s + 1 s here. The reconciler leaves the attempt alone until then.
    short = {"GATEWAY_TIMEOUT_SECONDS": "2", "PAYMENT_LOCK_MARGIN_SECONDS": "1"}
    slow = start_worker(SANDBOX_LATENCY_MS="1500", RECONCILE_AFTER_SECONDS="0", **short)
    api = make_client()
    payment_id = pay(api)
    wait_until(lambda: PaymentAttempt.objects.filter(payment_id=payment_id, maybe_sent=True))
    os.killpg(slow.pid, signal.SIGKILL)
    slow.wait(timeout=30)
    with override_settings(RECONCILE_AFTER_SECONDS=0):
        at_once = payments_reconcile()
    start_worker(RECONCILE_AFTER_SECONDS="0", **short)
    with override_settings(RECONCILE_AFTER_SECONDS=0):
        resumed = wait_until(lambda: payments_reconcile()["attempts"], timeout=30)
    completed = reaches(payment_id, "completed")
    assert at_once["attempts"] == 0
    assert resumed == 1
    assert completed.amount_captured == 2000
    assert charge_count(payment_id) == 1


def test_fallback_to_the_second_gateway_when_the_first_is_down(
    start_worker: WorkerFactory,
) -> None:
    from gateways.chaos import ChaosConfig, clear_chaos, set_chaos

    start_worker()
    set_chaos("sandbox_a", ChaosConfig(error_rate=1.0))
    try:
        api = make_client(gateways=["sandbox_a", "sandbox_b"], strategy="priority")
        payment_id = pay(api)
        completed = reaches(payment_id, "completed")
    finally:
        clear_chaos("sandbox_a")
    attempts = list(
        PaymentAttempt.objects.filter(payment_id=payment_id, operation="authorize").values_list(
            "gateway", "status"
        )
    )
    assert attempts == [("sandbox_a", "error"), ("sandbox_b", "succeeded")]
    assert completed.gateway == "sandbox_b"
    assert [e.gateway for e in ledger_entries(order_reference=payment_id)] == [
        "sandbox_b",
        "sandbox_b",
    ]
