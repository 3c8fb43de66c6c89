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

from gateways.base import GatewayResult, Outcome
from payments.gateway import Sent, Verdict, operation_plan, operation_record
from payments.models import IdempotencyKey, Payment, PaymentAttempt
from tests.conftest import VISA, MerchantClient, make_client
from tests.payments.helpers import payment_in
from tests.waiting import wait_until


def post(
    api: MerchantClient,
    body: dict,
    key: str | None = "key-1",
    path: str = "/v1/payments",
    **headers: str,
):
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
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
    results: dict[str, object] = {}
    blocker, thread = _blocked_first_request(api, results)
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


# --- which answers a key keeps: conflicts are not final ---


def _authorized(api: MerchantClient) -> Payment:
    return payment_in(api.merchant, "authorized")


@pytest.mark.django_db
def test_a_version_conflict_is_not_stored_and_the_retry_runs(api: MerchantClient) -> None:
    payment = _authorized(api)
    path = f"/v1/payments/{payment.id}/capture"
    stale = post(
        api, {"amount": 400}, key="cap-1", path=path, HTTP_IF_MATCH=str(payment.version - 1)
    )
    retry = post(api, {"amount": 400}, key="cap-1", path=path, HTTP_IF_MATCH=str(payment.version))
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "version_conflict")
    assert retry.status_code == 200
    assert retry.get("Idempotent-Replayed") is None
    assert PaymentAttempt.objects.filter(payment=payment, operation="capture").count() == 1
    assert IdempotencyKey.objects.get(key="cap-1").response_code == 200


@pytest.mark.django_db
def test_operation_in_progress_is_not_stored_and_the_retry_runs(api: MerchantClient) -> None:
    payment = _authorized(api)
    capture = post(api, {"amount": 400}, key="cap-1", path=f"/v1/payments/{payment.id}/capture")
    busy = post(api, {}, key="cancel-1", path=f"/v1/payments/{payment.id}/cancel")
    attempt = PaymentAttempt.objects.get(payment=payment, operation="capture")
    declined = GatewayResult(
        outcome=Outcome.DECLINED,
        gateway=attempt.gateway,
        operation="capture",
        reference=attempt.id,
        decline_code="card_declined",
    )
    operation_record(
        plan=operation_plan(attempt_id=attempt.id, fence="test"),
        sent=Sent(Verdict.DECLINED, declined, declined),
    )
    retry = post(api, {}, key="cancel-1", path=f"/v1/payments/{payment.id}/cancel")
    assert capture.status_code == 200
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "operation_in_progress")
    assert retry.status_code == 200
    assert retry.get("Idempotent-Replayed") is None
    assert PaymentAttempt.objects.filter(payment=payment, operation="void").count() == 1


@pytest.mark.django_db
def test_a_refused_transition_is_final_and_replayed(api: MerchantClient) -> None:
    """Unlike a conflict, the state machine's refusal is the request's answer: replayed as is."""
    payment = payment_in(api.merchant, "cancelled")
    path = f"/v1/payments/{payment.id}/capture"
    first = post(api, {}, key="cap-1", path=path)
    second = post(api, {}, key="cap-1", path=path)
    assert (first.status_code, first.json()["error"]["code"]) == (409, "invalid_state_transition")
    assert second["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_a_decline_is_final_and_replayed(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "authorized")
    path = f"/v1/payments/{payment.id}/capture"
    first = post(api, {"amount": payment.amount_authorized + 1}, key="cap-1", path=path)
    second = post(api, {"amount": payment.amount_authorized + 1}, key="cap-1", path=path)
    assert (first.status_code, first.json()["error"]["code"]) == (422, "amount_exceeded")
    assert second["Idempotent-Replayed"] == "true"


# --- a key whose request is still running is never forgotten, and one request wins ---


def _post_in_thread(api: MerchantClient, results: dict[str, object], slot: str) -> threading.Thread:
    """``POST /v1/payments`` with key-1 on a thread and connection of its own; the answer lands
    in ``results[slot]``."""

    def request() -> None:
        try:
            results[slot] = post(api, VISA)
        finally:
            connections.close_all()

    thread = threading.Thread(target=request)
    thread.start()
    return thread


def _holds_a_key() -> bool:
    """Whether some request holds an Idempotency-Key: its transaction's advisory lock, in this
    database (pg_locks lists the whole server's: another database's requests, a bench or
    ``make run`` on the same embedded server, hold advisory locks too)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return cursor.fetchone()[0] > 0


def _blocked_first_request(api: MerchantClient, results: dict[str, object]) -> tuple:
    """Start a request with key-1 that claims the key and then waits (its payment INSERT is
    held by a SHARE lock on the payment table, taken on another connection)."""
    blocker = _raw_connection()
    blocker.execute("LOCK TABLE payments_payment IN SHARE MODE")
    thread = _post_in_thread(api, results, "first")
    wait_until(_holds_a_key)
    return blocker, thread


@pytest.mark.django_db(transaction=True)
@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=24)
def test_an_expired_key_whose_new_request_still_runs_is_not_run_twice() -> None:
    """The first request found the key expired and runs anew; a retry meanwhile is 409, not a
    second run (the expired row it deleted is not the second request's to take)."""
    api = make_client()
    old = post(api, VISA)
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    results: dict[str, object] = {}
    blocker, thread = _blocked_first_request(api, results)
    taker = _post_in_thread(api, results, "second")
    taker.join(timeout=10)  # answered at once, or blocked behind the first (the old defect)
    blocker.rollback()
    blocker.close()
    thread.join(timeout=30)
    taker.join(timeout=30)
    assert (results["second"].status_code, results["second"].json()["error"]["code"]) == (
        409,
        "idempotency_key_in_use",
    )
    assert results["first"].status_code == 201
    assert results["first"].json()["id"] != old.json()["id"]
    assert Payment.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@override_settings(IDEMPOTENCY_LOCK_TIMEOUT_SECONDS=0)
def test_a_request_past_the_lock_timeout_still_holds_its_key() -> None:
    """However long a request runs, a retry with its key is 409 until it ends: its key is held
    by its transaction, not by a timestamp, so one key never commits two requests."""
    api = make_client()
    results: dict[str, object] = {}
    blocker, thread = _blocked_first_request(api, results)
    taker = _post_in_thread(api, results, "second")
    taker.join(timeout=10)
    blocker.rollback()
    blocker.close()
    thread.join(timeout=30)
    taker.join(timeout=30)
    assert [results["first"].status_code, results["second"].status_code] == [201, 409]
    assert Payment.objects.count() == 1
    replay = post(api, VISA)
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == Payment.objects.get().id


@pytest.mark.django_db(transaction=True)
def test_a_request_that_loses_the_race_to_the_key_row_rolls_back_and_replays() -> None:
    """The race the advisory lock leaves: another request's row for the key commits while this
    one runs (here written straight to the table by the connection that holds this request).
    This one's insert of the key row fails; it must then commit nothing and answer with the
    row that won, never a second payment."""
    from payments.idempotency import request_fingerprint

    api = make_client()
    results: dict[str, object] = {}
    blocker, thread = _blocked_first_request(api, results)
    blocker.execute(
        "INSERT INTO payments_idempotencykey (merchant_id, livemode, key, method, path,"
        " fingerprint, state, locked_at, response_code, response_body, created_at)"
        " VALUES (%s, false, 'key-1', 'POST', '/v1/payments', %s, 'completed', now(), 201,"
        " %s, now())",
        [
            api.merchant.pk,
            request_fingerprint("POST", "/v1/payments", json.dumps(VISA).encode()),
            json.dumps({"id": "pay_winner"}),
        ],
    )
    blocker.commit()
    blocker.close()
    thread.join(timeout=30)
    assert results["first"].status_code == 201
    assert results["first"]["Idempotent-Replayed"] == "true"
    assert results["first"].json() == {"id": "pay_winner"}
    assert Payment.objects.count() == 0


# --- expired keys are purged by beat ---


def _aged(hours: float, *keys: str) -> None:
    IdempotencyKey.objects.filter(key__in=keys).update(
        created_at=timezone.now() - timedelta(hours=hours)
    )


@pytest.mark.django_db
@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=24, IDEMPOTENCY_PURGE_BATCH_SIZE=2)
def test_the_purge_deletes_keys_past_the_retention_in_batches(api: MerchantClient) -> None:
    from django.test.utils import CaptureQueriesContext

    from payments.tasks import idempotency_keys_purge

    for n in range(7):
        post(api, VISA, key=f"key-{n}")
    _aged(25, "key-0", "key-1", "key-2", "key-3", "key-4")
    _aged(23, "key-5")
    with CaptureQueriesContext(connection) as queries:
        purged = idempotency_keys_purge.apply().get()
    deletes = [
        q for q in queries.captured_queries if 'DELETE FROM "payments_idempotencykey"' in q["sql"]
    ]
    assert purged == 5
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["key-5", "key-6"]
    assert len(deletes) == 3
    again = post(api, VISA, key="key-0")
    assert again.status_code == 201
    assert again.get("Idempotent-Replayed") is None


@pytest.mark.django_db(transaction=True)
@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=24)
def test_the_purge_leaves_an_expired_key_that_a_running_request_renews() -> None:
    """A request found its key expired and runs anew (it holds the old row, deleted in its
    transaction): the purge skips that row, and the request's answer is what the key keeps."""
    from payments.tasks import idempotency_keys_purge

    api = make_client()
    post(api, VISA)
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    results: dict[str, object] = {}
    blocker, thread = _blocked_first_request(api, results)
    purged = idempotency_keys_purge.apply().get()
    blocker.rollback()
    blocker.close()
    thread.join(timeout=30)
    assert purged == 0
    assert results["first"].status_code == 201
    assert (
        IdempotencyKey.objects.get(key="key-1").response_body["id"] == results["first"].json()["id"]
    )


@pytest.mark.django_db
@override_settings(IDEMPOTENCY_KEY_TTL_HOURS=24, IDEMPOTENCY_LOCK_TIMEOUT_SECONDS=300)
def test_the_purge_deletes_an_expired_key_whose_request_died(api: MerchantClient) -> None:
    from payments.idempotency import request_fingerprint
    from payments.tasks import idempotency_keys_purge

    IdempotencyKey.objects.create(
        merchant=api.merchant,
        key="dead",
        method="POST",
        path="/v1/payments",
        fingerprint=request_fingerprint("POST", "/v1/payments", b"{}"),
        locked_at=timezone.now() - timedelta(hours=25),
    )
    _aged(25, "dead")
    assert idempotency_keys_purge.apply().get() == 1
    assert not IdempotencyKey.objects.exists()


def test_the_purge_runs_on_beat() -> None:
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["idempotency-purge"]
    assert entry["task"] == "payments.tasks.idempotency_keys_purge"
    assert entry["schedule"] == settings.BEAT_IDEMPOTENCY_PURGE_SECONDS


@pytest.mark.django_db
def test_the_key_lookup_uses_the_unique_index_even_on_a_young_tables_statistics(
    api: MerchantClient,
) -> None:
    """Statistics taken while the table was empty (a new deployment; autovacuum analyses a
    minute later at the earliest), then thousands of one merchant's keys: the claim's lookup
    still goes straight to the key, by the unique (merchant, livemode, key) index. With a
    separate index on the merchant, the planner chose that one and read every key of the
    merchant (about 10 ms at 8,719 keys, against 0.02 ms; found by make bench-api)."""
    from payments.idempotency import _CLAIM_SQL, _lock_id

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payments_idempotencykey")
    now = timezone.now()
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(
            merchant=api.merchant,
            key=f"key-{n}",
            method="POST",
            path="/v1/payments",
            fingerprint="f",
            state=IdempotencyKey.State.COMPLETED,
            locked_at=now,
        )
        for n in range(3000)
    )
    merchant_id = api.merchant.id
    with connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + _CLAIM_SQL,
            [_lock_id(merchant_id, False, "absent"), merchant_id, False, "absent"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "idempotency_merchant_mode_key" in plan, plan
    assert "Rows Removed by Filter" not in plan, plan


@pytest.mark.django_db
def test_the_create_path_statements_are_prepared_after_the_threshold(api: MerchantClient) -> None:
    """The Idempotency-Key's claim, its row's insert and the payment's write with its event and
    outbox row run on a prepared statement once a connection has run them
    ``DB_PREPARE_THRESHOLD`` times (common/db.py): PostgreSQL plans them no more (issue 13)."""
    from tests.common.test_db import THRESHOLD, _prepared

    for n in range(THRESHOLD + 1):
        assert post(api, VISA, key=f"prepared-{n}").status_code == 201
    prepared = _prepared()
    assert any("pg_try_advisory_xact_lock" in s for s in prepared), prepared
    assert any(s.startswith('INSERT INTO "payments_idempotencykey"') for s in prepared), prepared
    assert any("INSERT INTO outbox_outboxmessage" in s for s in prepared), prepared
