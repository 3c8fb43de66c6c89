"""The merchant API through HTTP: creation, reads, lists, events, isolation, auth and errors."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from payments.models import IdempotencyKey, Payment, PaymentEvent
from tests.conftest import VISA, MerchantClient, scrape
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db


def create(api: APIClient, body: dict, **headers: str):
    return api.post(
        "/v1/payments", data=json.dumps(body), content_type="application/json", **headers
    )


def error(response) -> tuple[int, str, str | None]:
    body = response.json()["error"]
    return response.status_code, body["code"], body.get("param")


def test_create_answers_201_with_the_payment_object(api: MerchantClient) -> None:
    body = {
        **VISA,
        "capture_method": "manual",
        "customer": {"id": "cus_42", "email": "a@example.com", "country": "US"},
        "description": "Order 1234",
        "merchant_reference": "order-1234",
        "metadata": {"order_id": "1234"},
    }
    response = create(api, body)
    payment = response.json()
    assert response.status_code == 201
    assert payment["id"].startswith("pay_")
    assert (payment["object"], payment["status"], payment["version"]) == ("payment", "initiated", 1)
    assert (payment["amount"], payment["currency"], payment["capture_method"]) == (
        2000,
        "USD",
        "manual",
    )
    assert payment["customer"] == body["customer"]
    assert payment["metadata"] == {"order_id": "1234"}
    assert payment["failure"] is None
    assert Payment.objects.get(pk=payment["id"]).merchant == api.merchant


def test_create_records_the_initiated_event_with_the_key_as_actor(api: MerchantClient) -> None:
    payment_id = create(api, VISA).json()["id"]
    event = PaymentEvent.objects.get(payment_id=payment_id)
    assert (event.type, event.sequence, event.actor) == (
        "payment.initiated",
        1,
        f"api_key:{api.api_key[:12]}",
    )


def test_get_reads_one_payment(api: MerchantClient) -> None:
    payment_id = create(api, VISA).json()["id"]
    response = api.get(f"/v1/payments/{payment_id}")
    assert (response.status_code, response.json()["id"]) == (200, payment_id)


def test_another_merchants_payment_is_404_like_a_missing_one(
    api: MerchantClient, other_api: MerchantClient
) -> None:
    payment_id = create(api, VISA).json()["id"]
    theirs = other_api.get(f"/v1/payments/{payment_id}")
    missing = api.get("/v1/payments/pay_00000000000000000000000000")
    assert error(theirs)[:2] == error(missing)[:2] == (404, "resource_missing")
    assert other_api.get(f"/v1/payments/{payment_id}/events").status_code == 404
    assert other_api.get("/v1/payments").json()["data"] == []


def test_events_list_oldest_first(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "completed")
    body = api.get(f"/v1/payments/{payment.id}/events").json()
    assert body["object"] == "list"
    assert [e["type"] for e in body["data"]] == [
        "payment.initiated",
        "payment.processing",
        "payment.authorized",
        "payment.captured",
        "payment.completed",
    ]
    assert [e["sequence"] for e in body["data"]] == [1, 2, 3, 4, 5]
    assert body["data"][1]["from_status"] == "initiated"


def test_list_is_newest_first_with_cursor_pagination(api: MerchantClient) -> None:
    ids = [create(api, VISA).json()["id"] for _ in range(5)]
    newest_first = list(reversed(ids))
    page1 = api.get("/v1/payments?limit=2").json()
    page2 = api.get(f"/v1/payments?limit=2&starting_after={page1['data'][-1]['id']}").json()
    page3 = api.get(f"/v1/payments?limit=2&starting_after={page2['data'][-1]['id']}").json()
    back = api.get(f"/v1/payments?limit=2&ending_before={page3['data'][0]['id']}").json()
    assert [p["id"] for p in page1["data"]] == newest_first[:2]
    assert [p["id"] for p in page2["data"]] == newest_first[2:4]
    assert [p["id"] for p in page3["data"]] == newest_first[4:]
    assert (page1["has_more"], page2["has_more"], page3["has_more"]) == (True, True, False)
    assert [p["id"] for p in back["data"]] == newest_first[2:4]
    assert back["has_more"] is True


def test_list_filters(api: MerchantClient) -> None:
    first = create(api, {**VISA, "merchant_reference": "order-1"}).json()
    create(api, {**VISA, "merchant_reference": "order-2"})
    cancelled = payment_in(api.merchant, "cancelled")
    by_ref = api.get("/v1/payments?merchant_reference=order-1").json()["data"]
    by_status = api.get("/v1/payments?status=cancelled").json()["data"]
    after = api.get(
        "/v1/payments", {"created_gte": first["created_at"], "created_lt": "2999-01-01T00:00:00Z"}
    ).json()["data"]
    before = api.get("/v1/payments", {"created_lt": first["created_at"]}).json()["data"]
    assert [p["id"] for p in by_ref] == [first["id"]]
    assert [p["id"] for p in by_status] == [cancelled.id]
    assert len(after) == 3
    assert before == []


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("status=paid", "status"),
        ("created_gte=yesterday", "created_gte"),
        ("starting_after=nope", "starting_after"),
        # Each a 500 before: "²" is a digit to str.isdigit() but not to int(); a well-formed
        # date that does not exist made parse_datetime raise; a time past the calendar's end
        # in UTC overflowed.
        ("limit=%C2%B2", "limit"),
        ("created_gte=2026-02-30T00:00:00Z", "created_gte"),
        ("created_lt=0001-01-01T00:00:00%2B01:00", "created_lt"),
        # re.match let a pattern's $ match before a final newline; the schema's pattern does not.
        (f"starting_after=pay_{'0' * 26}%0A", "starting_after"),
    ],
)
def test_list_parameter_errors(api: MerchantClient, query: str, param: str) -> None:
    assert error(api.get(f"/v1/payments?{query}")) == (400, "parameter_invalid", param)


@pytest.mark.parametrize("path", ["/v1/payments", "/v1/refunds", "/v1/events"])
def test_a_time_filter_with_any_utc_offset_is_read(api: MerchantClient, path: str) -> None:
    # RFC 3339 (the schema's date-time) allows offsets up to 23:59, PostgreSQL up to 15:59 only:
    # schemathesis found a 500 (the time is now compared in UTC).
    created = create(api, VISA).json()
    response = api.get(path, {"created_gte": "2000-01-01T00:00:00-18:03"})
    assert response.status_code == 200, response.content
    if path == "/v1/payments":
        assert [p["id"] for p in response.json()["data"]] == [created["id"]]


def test_missing_key_is_401(db: None) -> None:
    response = APIClient().get("/v1/payments")
    assert error(response)[:2] == (401, "authentication_required")
    assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "header", ["Bearer sk_test_wrong", "Bearer nonsense", "Basic abc", "Bearer"]
)
def test_wrong_key_is_401(db: None, header: str) -> None:
    response = APIClient().get("/v1/payments", HTTP_AUTHORIZATION=header)
    assert error(response)[:2] == (401, "invalid_api_key")


@pytest.mark.parametrize(
    "header", ["Bearer  {key}", "Bearer {key} ", "Bearer\t{key}", "bearer {key}"]
)
def test_a_real_key_in_a_malformed_header_is_401(api: MerchantClient, header: str) -> None:
    # Exactly "Bearer <key>": one space, nothing around the key (a real key in each case).
    response = APIClient().get("/v1/payments", HTTP_AUTHORIZATION=header.format(key=api.api_key))
    assert error(response)[:2] == (401, "invalid_api_key")


def test_revoked_key_is_401(api: MerchantClient) -> None:
    from django.utils import timezone

    api.merchant.api_keys.update(revoked_at=timezone.now())
    assert api.get("/v1/payments").status_code == 401


VALIDATION_CASES = [
    ({**VISA, "amount": 0}, "amount_invalid", "amount"),
    ({**VISA, "amount": -5}, "amount_invalid", "amount"),
    ({**VISA, "amount": 10.5}, "amount_invalid", "amount"),
    ({**VISA, "amount": "2000"}, "amount_invalid", "amount"),
    ({**VISA, "amount": True}, "amount_invalid", "amount"),
    ({**VISA, "currency": "JPY", "amount": 10**10 + 1}, "amount_too_large", "amount"),
    ({**VISA, "currency": "usd"}, "currency_invalid", "currency"),
    ({**VISA, "currency": "XYZ"}, "currency_invalid", "currency"),
    ({"currency": "USD", "payment_method": VISA["payment_method"]}, "parameter_missing", "amount"),
    (
        {**VISA, "payment_method": {"type": "card"}},
        "payment_method_invalid",
        "payment_method.token",
    ),
    (
        {**VISA, "payment_method": {"type": "bank", "token": "t"}},
        "payment_method_invalid",
        "payment_method.type",
    ),
    ({**VISA, "capture_method": "later"}, "capture_method_invalid", "capture_method"),
    ({**VISA, "metadata": {f"k{i}": "v" for i in range(51)}}, "metadata_invalid", "metadata"),
    ({**VISA, "metadata": {"k" * 41: "v"}}, "metadata_invalid", f"metadata[{'k' * 41}]"),
    ({**VISA, "metadata": {"k": "v" * 501}}, "metadata_invalid", "metadata[k]"),
    ({**VISA, "metadata": {"k": 5}}, "metadata_invalid", "metadata[k]"),
    ({**VISA, "customer": {"email": "not-an-email"}}, "customer_invalid", "customer.email"),
    ({**VISA, "customer": {"country": "usa"}}, "customer_invalid", "customer.country"),
    # A pattern's $ matched before a final newline (re.match); the schema's pattern refuses it.
    ({**VISA, "customer": {"country": "US\n"}}, "customer_invalid", "customer.country"),
    (
        {**VISA, "payment_method": {"type": "card", "token": "tok_visa\n"}},
        "payment_method_invalid",
        "payment_method.token",
    ),
    ({**VISA, "surprise": 1}, "parameter_unknown", "surprise"),
]


@pytest.mark.parametrize(("body", "code", "param"), VALIDATION_CASES)
def test_validation_errors_have_stable_codes_and_write_nothing(
    api: MerchantClient, body: dict, code: str, param: str
) -> None:
    response = create(api, body)
    assert error(response) == (400, code, param)
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert Payment.objects.count() == 0


def test_exponent_bounds_the_amount_per_currency(api: MerchantClient) -> None:
    kwd = create(api, {**VISA, "currency": "KWD", "amount": 10**13})
    jpy = create(api, {**VISA, "currency": "JPY", "amount": 10**13})
    assert kwd.status_code == 201
    assert error(jpy)[:2] == (400, "amount_too_large")


@pytest.mark.parametrize(
    "body",
    [
        {**VISA, "payment_method": {"type": "card", "token": "4242424242424242"}},
        {**VISA, "description": "card 4242 4242 4242 4242 please"},
        {**VISA, "metadata": {"pan": "5555-5555-5555-4444"}},
        {**VISA, "customer": {"id": 378282246310005}},
    ],
)
def test_raw_card_numbers_are_refused(api: MerchantClient, body: dict) -> None:
    assert error(create(api, body))[:2] == (400, "card_data_not_allowed")
    assert Payment.objects.count() == 0


def test_long_numbers_that_fail_luhn_are_not_card_numbers(api: MerchantClient) -> None:
    response = create(api, {**VISA, "merchant_reference": "4242424242424241"})
    assert response.status_code == 201


def test_malformed_json_is_400(api: MerchantClient) -> None:
    response = api.post("/v1/payments", data="{not json", content_type="application/json")
    assert error(response)[:2] == (400, "invalid_json")


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_oversized_body_is_413(api: MerchantClient) -> None:
    response = create(api, {**VISA, "description": "x" * 2000}, HTTP_IDEMPOTENCY_KEY="big")
    assert error(response)[:2] == (413, "request_too_large")
    assert Payment.objects.count() == IdempotencyKey.objects.count() == 0


def test_health_and_schema(db: None) -> None:
    client = APIClient()
    ready = client.get("/health/ready")
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert client.get("/health/live").status_code == 200
    assert (ready.status_code, ready.json()["checks"]) == (
        200,
        {"database": "ok", "redis": "ok", "broker": "ok"},
    )
    assert schema.status_code == 200
    assert {"/v1/payments", "/v1/payments/{payment_id}", "/v1/payments/{payment_id}/events"} <= set(
        schema.json()["paths"]
    )
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert (
        "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
        in docs.content.decode()
    )


def test_metrics_count_payments_by_state(api: MerchantClient) -> None:
    create(api, VISA)
    payment_in(api.merchant, "cancelled")
    text = scrape()
    assert 'aegispay_payments{status="initiated"} 1.0' in text
    assert 'aegispay_payments{status="cancelled"} 1.0' in text
    assert "aegispay_outbox_pending 3.0" in text
    assert 'aegispay_http_requests_total{method="POST",route="v1/payments",status="201"}' in text


def test_metrics_registration_needs_no_database(django_assert_num_queries) -> None:
    """The collector is registered when urls are imported, before ``migrate`` made tables."""
    from backoffice.metrics import DatabaseCollector

    with django_assert_num_queries(0):
        names = [family.name for family in DatabaseCollector().describe()]
    assert names == [
        "aegispay_payments",
        "aegispay_unresolved_payments",
        "aegispay_outbox_pending",
        "aegispay_outbox_oldest_pending_seconds",
    ]
