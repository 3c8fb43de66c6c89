"""Idempotency-Key as the contract describes it, including requests racing on one key."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from payments.models import IdempotencyKey, Payment
from tests.conftest import VISA, MerchantClient, make_client
from tests.waiting import wait_until


def post(api: MerchantClient, body: dict, key: str | None = "key-1", path: str = "/v1/payments"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post(path, data=json.dumps(body), content_type="application/json", **headers)


@pytest.mark.django_db
def test_replay_returns_the_stored_response_and_creates_nothing(api: MerchantClient) -> None:
    first = post(api, VISA)
    second = post(api, VISA)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert first.get("Idempotent-Replayed") is None
    assert Payment.objects.count() == 1


@pytest.mark.django_db
def test_key_order_in_the_body_does_not_matter(api: MerchantClient) -> None:
    first = post(api, VISA)
    reordered = api.post(
        "/v1/payments",
        data=json.dumps(dict(reversed(list(VISA.items())))),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="key-1",
    )
    assert reordered.json()["id"] == first.json()["id"]


@pytest.mark.django_db
def test_same_key_with_another_body_is_422(api: MerchantClient) -> None:
    post(api, VISA)
    response = post(api, {**VISA, "amount": 2001})
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "idempotency_key_reused",
    )
    assert Payment.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_scoped_to_the_merchant(api: MerchantClient, other_api: MerchantClient) -> None:
    mine = post(api, VISA)
    theirs = post(other_api, VISA)
    assert theirs.status_code == 201
    assert theirs.json()["id"] != mine.json()["id"]


@pytest.mark.django_db
def test_validation_errors_are_stored_and_replayed(api: MerchantClient) -> None:
    first = post(api, {**VISA, "amount": -1})
    second = post(api, {**VISA, "amount": -1})
    assert (first.status_code, second.status_code) == (400, 400)
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
def test_an_invalid_key_is_refused_and_stores_nothing(api: MerchantClient, key: str) -> None:
    response = post(api, VISA, key=key)
    assert (response.status_code, response.json()["error"]["code"]) == (
        400,
        "idempotency_key_invalid",
    )
    assert IdempotencyKey.objects.count() == Payment.objects.count() == 0


@pytest.mark.django_db
def test_a_failed_authentication_stores_nothing(db: None) -> None:
    from rest_framework.test import APIClient

    response = APIClient().post(
        "/v1/payments",
        data=json.dumps(VISA),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k",
        HTTP_AUTHORIZATION="Bearer sk_test_nope",
    )
    assert response.status_code == 401
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.django_db
@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=24)
def test_an_expired_key_runs_the_request_again(api: MerchantClient) -> None:
    first = post(api, VISA)
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    second = post(api, VISA)
    assert second.status_code == 201
    assert second.get("Idempotent-Replayed") is None
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.django_db
def test_a_stale_in_progress_key_is_taken_over(api: MerchantClient) -> None:
    """A request that died mid-way committed nothing; after the lock timeout a retry runs."""
    from payments.idempotency import request_fingerprint

    IdempotencyKey.objects.create(
        merchant=api.merchant,
        key="key-1",
        method="POST",
        path="/v1/payments",
        fingerprint=request_fingerprint("POST", "/v1/payments", json.dumps(VISA).encode()),
        locked_at=timezone.now() - timedelta(hours=1),
    )
    response = post(api, VISA)
    assert response.status_code == 201
    assert IdempotencyKey.objects.get().state == "completed"


def _raw_connection() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"], user=s["USER"], host=s["HOST"] or None, port=s["PORT"] or None
    )


@pytest.mark.django_db(transaction=True)
def test_same_key_while_the_first_request_runs_is_409() -> None:
    """The first request is held inside its transaction, after it claimed the key, by a
    SHARE lock on the payment table taken on another connection (its INSERT waits)."""
    api = make_client()
    blocker = _raw_connection()
    blocker.execute("LOCK TABLE payments_payment IN SHARE MODE")
    results: dict[str, object] = {}

    def first() -> None:
        try:
            results["first"] = post(api, VISA)
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    # Wait until the first request holds the key and is blocked on the merchant row.
    wait_until(IdempotencyKey.objects.filter(key="key-1").exists)
    in_use = post(api, VISA)
    blocker.rollback()
    blocker.close()
    thread.join(timeout=30)
    replay = post(api, VISA)
    assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "idempotency_key_in_use")
    assert results["first"].status_code == 201
    assert replay.json()["id"] == results["first"].json()["id"]
    assert Payment.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_create_exactly_one_payment() -> None:
    api = make_client()
    barrier = threading.Barrier(8)

    def send(_: int):
        try:
            barrier.wait(timeout=10)
            return post(api, VISA, key="race")
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(8)))
    created = [r for r in responses if r.status_code == 201]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(created) + len(conflicts) == 8
    assert len({r.json()["id"] for r in created}) == 1
    assert sum(r.get("Idempotent-Replayed") is None for r in created) == 1
    assert Payment.objects.filter(merchant=api.merchant).count() == 1
    assert {r.json()["error"]["code"] for r in conflicts} <= {"idempotency_key_in_use"}
