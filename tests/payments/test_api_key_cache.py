"""A web process keeps the API keys it found (issue 13): a request of a known key costs no
database read for the key, and any change to a key or a merchant is seen on the next request,
in every process, through the generation in Redis that each request reads with its rate-limit
token."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone

from common.rate_limit import Decision, RateLimiter, limiter
from payments.authentication import KEYS_GENERATION
from payments.models import ApiKey
from tests.conftest import VISA, MerchantClient


def _reads_of_keys(statements: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in statements.captured_queries if "payments_apikey" in q["sql"]]


def _payment(api: MerchantClient) -> str:
    response = api.post("/v1/payments", VISA, format="json")
    assert response.status_code == 201
    return response.json()["id"]


def test_a_known_key_is_not_read_from_the_database_again(api: MerchantClient) -> None:
    payment_id = _payment(api)  # the key's first use in this process: read and kept
    with CaptureQueriesContext(connection) as statements:
        response = api.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 200
    assert _reads_of_keys(statements) == []
    assert len(statements) == 1  # the payment


def test_a_change_made_by_another_process_is_seen_on_the_next_request(
    api: MerchantClient,
) -> None:
    """Another process revoked the key: its row changed and, after its commit, the generation
    moved (what ``keys_changed`` does there). This process kept the key, and refuses it now."""
    payment_id = _payment(api)
    assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    ApiKey.objects.filter(merchant=api.merchant).update(revoked_at=timezone.now())  # no signal
    assert api.get(f"/v1/payments/{payment_id}").status_code == 200  # nothing announced it yet
    assert limiter.incr(KEYS_GENERATION)
    response = api.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_revocation_in_this_process_stops_the_key_at_once(api: MerchantClient) -> None:
    payment_id = _payment(api)
    key = ApiKey.objects.get(merchant=api.merchant)
    assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    assert api.get(f"/v1/payments/{payment_id}").status_code == 401


@override_settings(API_KEY_CACHE_SECONDS=0.3)
def test_a_change_nobody_announced_is_seen_once_the_kept_key_expires(
    api: MerchantClient,
) -> None:
    """Redis was down when the change committed, so the generation did not move: the kept key
    is used for at most ``API_KEY_CACHE_SECONDS``."""
    payment_id = _payment(api)
    ApiKey.objects.filter(merchant=api.merchant).update(revoked_at=timezone.now())
    assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    time.sleep(0.4)
    assert api.get(f"/v1/payments/{payment_id}").status_code == 401


def test_a_kept_key_stops_at_its_expiry(api: MerchantClient) -> None:
    """A rolled key's overlap ends while this process keeps it."""
    from datetime import timedelta

    payment_id = _payment(api)
    key = ApiKey.objects.get(merchant=api.merchant)
    key.expires_at = timezone.now() + timedelta(seconds=0.5)
    key.save(update_fields=["expires_at"])
    assert api.get(f"/v1/payments/{payment_id}").status_code == 200  # read again, and kept
    with CaptureQueriesContext(connection) as statements:
        assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    assert _reads_of_keys(statements) == []
    time.sleep(0.6)
    assert api.get(f"/v1/payments/{payment_id}").status_code == 401


def test_with_redis_down_keys_are_read_from_the_database(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    payment_id = _payment(api)
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        monkeypatch.setattr("payments.authentication.limiter", RateLimiter())
        ApiKey.objects.filter(merchant=api.merchant).update(revoked_at=timezone.now())
        with CaptureQueriesContext(connection) as statements:
            response = api.get(f"/v1/payments/{payment_id}")
    assert response.status_code == 401
    assert _reads_of_keys(statements)


def _round_trips(monkeypatch: pytest.MonkeyPatch, limiter_: RateLimiter) -> list[str]:
    """The limiter's calls to Redis from here on, by name (each one round trip)."""
    calls: list[str] = []
    real_take, real_read = limiter_.take, limiter_.read

    def take(*args: Any, **kwargs: Any) -> Decision | None:
        calls.append("take")
        return real_take(*args, **kwargs)

    def read(key: str) -> tuple[bool, bytes | None]:
        calls.append("read")
        return real_read(key)

    monkeypatch.setattr(limiter_, "take", take)
    monkeypatch.setattr(limiter_, "read", read)
    return calls


def test_a_moved_generation_costs_no_second_round_trip(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token's round trip read the new generation already: the key is read from the
    database and kept at that generation without asking Redis again."""
    payment_id = _payment(api)
    assert limiter.incr(KEYS_GENERATION)  # a change somewhere that leaves this key as it was
    trips = _round_trips(monkeypatch, limiter)
    with CaptureQueriesContext(connection) as statements:
        assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    assert trips == ["take"]
    assert _reads_of_keys(statements)  # read again from the database
    with CaptureQueriesContext(connection) as statements:
        assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    assert _reads_of_keys(statements) == []  # and kept at the new generation


def test_with_redis_down_a_kept_key_costs_one_attempt_at_redis(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis that hangs costs a request its timeout once per attempt: one, not two."""
    payment_id = _payment(api)  # kept
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        down = RateLimiter()
        monkeypatch.setattr("payments.authentication.limiter", down)
        trips = _round_trips(monkeypatch, down)
        assert api.get(f"/v1/payments/{payment_id}").status_code == 200
    assert trips == ["take"]
