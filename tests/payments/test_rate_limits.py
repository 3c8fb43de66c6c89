"""Rate limits on real Redis: each API key's token bucket, the per-address budget for requests
with no key or a wrong one, failed admin logins, the RateLimit-* headers on every answer, and a
Redis that fails letting requests through (counted), never taking the API down."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from common.rate_limit import UNCHECKED, Bucket, RateLimiter, client_ip
from payments.models import ApiKey
from tests.conftest import VISA, MerchantClient

pytestmark = pytest.mark.django_db


def error(response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["type"], body["code"]


def limit_key(api: MerchantClient, *, rate: float, burst: int) -> None:
    ApiKey.objects.filter(merchant=api.merchant).update(
        rate_limit_per_second=rate, rate_limit_burst=burst
    )


def test_every_answer_carries_the_rate_limit_headers(api: MerchantClient, settings) -> None:
    settings.API_RATE_LIMIT_PER_SECOND = 0.01  # the default burst, refilled too slowly to notice
    created = api.post("/v1/payments", data=json.dumps(VISA), content_type="application/json")
    missing = api.get("/v1/payments/pay_01jxxxxxxxxxxxxxxxxxxxxxxx")
    invalid = api.post("/v1/payments", data="{}", content_type="application/json")
    for response in (created, missing, invalid):
        assert response["RateLimit-Limit"] == "200"
        assert 0 <= int(response["RateLimit-Remaining"]) < 200
        assert int(response["RateLimit-Reset"]) >= 0
    assert [created.status_code, missing.status_code, invalid.status_code] == [201, 404, 400]
    assert [int(r["RateLimit-Remaining"]) for r in (created, missing, invalid)] == [199, 198, 197]


def test_a_key_over_its_own_budget_gets_429_with_retry_after(api: MerchantClient) -> None:
    limit_key(api, rate=0.01, burst=3)
    answers = [api.get("/v1/payments") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert error(refused) == (429, "rate_limit_error", "rate_limited")
    assert int(refused["Retry-After"]) >= 1
    assert refused["RateLimit-Limit"] == "3"


def test_the_default_budget_comes_from_the_settings(api: MerchantClient, settings) -> None:
    settings.API_RATE_LIMIT_PER_SECOND = 0.01
    settings.API_RATE_LIMIT_BURST = 5
    codes = [api.get("/v1/payments").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2


def test_keys_have_budgets_of_their_own(api: MerchantClient, other_api: MerchantClient) -> None:
    limit_key(api, rate=0.01, burst=1)
    assert api.get("/v1/payments").status_code == 200
    assert api.get("/v1/payments").status_code == 429
    assert other_api.get("/v1/payments").status_code == 200


def test_wrong_keys_share_a_budget_per_client_address(api: MerchantClient, settings) -> None:
    settings.API_CLIENT_RATE_LIMIT_PER_SECOND = 0.01
    settings.API_CLIENT_RATE_LIMIT_BURST = 3
    guesses = [
        APIClient().get("/v1/payments", HTTP_AUTHORIZATION=f"Bearer sk_test_guess{n}")
        for n in range(5)
    ]
    assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
    assert error(guesses[-1]) == (429, "rate_limit_error", "rate_limited")
    # No key at all takes from the same budget; another address has its own.
    assert APIClient().get("/v1/payments").status_code == 429
    assert APIClient(REMOTE_ADDR="10.9.8.7").get("/v1/payments").status_code == 401
    # A real key is limited by its own budget, not the address's.
    assert api.get("/v1/payments").status_code == 200


def test_parallel_bad_key_requests_are_limited(db: None, settings) -> None:
    """200 requests with bad keys from 8 threads at once: the address's burst and no more."""
    settings.API_CLIENT_RATE_LIMIT_PER_SECOND = 0.01
    settings.API_CLIENT_RATE_LIMIT_BURST = 20
    codes: list[int] = []
    lock = threading.Lock()

    def guess(thread: int) -> None:
        client = APIClient()
        try:
            for n in range(25):
                header = f"Bearer sk_test_{thread}_{n}"
                status = client.get("/v1/payments", HTTP_AUTHORIZATION=header).status_code
                with lock:
                    codes.append(status)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=guess, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(codes) == 200
    assert codes.count(401) == 20
    assert codes.count(429) == 180


def test_the_bucket_is_atomic_across_connections(db: None) -> None:
    """50 threads, each on a Redis connection of its own, take 4 tokens each from one bucket of
    40 that barely refills: exactly 40 are granted."""
    granted: list[bool] = []
    lock = threading.Lock()
    bucket = Bucket(rate=0.001, burst=40)
    from django.conf import settings

    def take() -> None:
        own = RateLimiter(redis.Redis.from_url(settings.REDIS_URL))
        for _ in range(4):
            decision = own.take("test", "atomic", bucket)
            assert decision is not None
            with lock:
                granted.append(decision.allowed)

    threads = [threading.Thread(target=take) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 40
    assert granted.count(False) == 160


def test_a_failing_redis_lets_requests_through_and_counts_them(
    api: MerchantClient, monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    # The limiter's own client, on a Redis that is not there (nothing listens on port 1).
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # restored by the settings fixture
    monkeypatch.setattr("payments.authentication.limiter", RateLimiter())
    before = UNCHECKED.labels("api_key")._value.get()
    limit_key(api, rate=0.01, burst=1)
    started = time.monotonic()
    codes = [api.get("/v1/payments").status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    assert time.monotonic() - started < 3  # no retries: milliseconds each, not seconds
    assert UNCHECKED.labels("api_key")._value.get() == before + 3
    assert "RateLimit-Limit" not in api.get("/v1/payments")


def test_failed_admin_logins_are_throttled_per_address(db: None, settings) -> None:
    settings.ADMIN_LOGIN_FAILURES_PER_MINUTE = 0.01
    settings.ADMIN_LOGIN_FAILURES_BURST = 3
    User.objects.create_superuser("ops", "ops@example.com", "right-password-123")
    client = Client()
    wrong = {"username": "ops", "password": "wrong", "next": "/admin/"}
    answers = [client.post("/admin/login/", wrong).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]  # three failures shown as the form, then refused
    # Out of tries, even the right password is not checked from this address...
    right = {"username": "ops", "password": "right-password-123", "next": "/admin/"}
    refused = client.post("/admin/login/", right)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    # ...but another address logs in.
    other = Client(REMOTE_ADDR="10.1.2.3").post("/admin/login/", right)
    assert other.status_code == 302


def test_a_successful_admin_login_takes_no_try(db: None, settings) -> None:
    settings.ADMIN_LOGIN_FAILURES_BURST = 2
    User.objects.create_superuser("ops", "ops@example.com", "right-password-123")
    right = {"username": "ops", "password": "right-password-123", "next": "/admin/"}
    for _ in range(4):
        assert Client().post("/admin/login/", right).status_code == 302


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "1.1.1.1", "127.0.0.1"),  # no trusted proxy: the header is the client's word
        (1, "6.6.6.6, 1.1.1.1", "1.1.1.1"),  # the proxy appended what it saw
        (2, "6.6.6.6, 2.2.2.2, 1.1.1.1", "2.2.2.2"),
    ],
)
def test_the_client_address_trusts_only_the_proxies_it_is_told_of(
    settings, rf, hops: int, forwarded: str, expected: str
) -> None:
    settings.RATE_LIMIT_PROXY_HOPS = hops
    request = rf.get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="127.0.0.1")
    assert client_ip(request) == expected


def test_staff_set_a_keys_budget_in_the_admin(api: MerchantClient) -> None:
    staff = Client()
    staff.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-123456789"))
    key = ApiKey.objects.get(merchant=api.merchant)
    page = staff.get(f"/admin/payments/apikey/{key.pk}/change/")
    assert page.status_code == 200
    assert api.api_key not in page.content.decode()  # only its prefix is known
    saved = staff.post(
        f"/admin/payments/apikey/{key.pk}/change/",
        {"rate_limit_per_second": "0.01", "rate_limit_burst": "2"},
    )
    assert saved.status_code == 302
    assert [api.get("/v1/payments").status_code for _ in range(3)] == [200, 200, 429]
