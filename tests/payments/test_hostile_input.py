"""Hostile input at the merchant API's edges: card numbers however they are written, and text or
JSON the server cannot store or parse. Each is a 400 with a stable code, and nothing is stored:
no payment, refund or webhook endpoint, and no Idempotency-Key row holding the answer."""

from __future__ import annotations

import json

import pytest

from payments.models import IdempotencyKey, Payment, PaymentEvent, Refund
from tests.conftest import VISA, MerchantClient
from tests.payments.helpers import payment_in
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

PAN = "4242424242424242"


def post(api: MerchantClient, path: str, raw: str, **headers: str):
    return api.post(path, data=raw, content_type="application/json", **headers)


def error(response) -> tuple[int, str]:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()["error"]
    return response.status_code, body["code"]


def assert_nothing_stored() -> None:
    assert Payment.objects.count() == 0
    assert PaymentEvent.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def spaced(separator: str) -> str:
    return separator.join(PAN[i : i + 4] for i in range(0, 16, 4))


# --- card numbers, however they are written ---

CARD_WRITINGS = {
    "json escapes": '"' + "".join(f"\\u{ord(c):04x}" for c in PAN) + '"',
    "double spaces": json.dumps(spaced("  ")),
    "dots": json.dumps(spaced(".")),
    "slashes": json.dumps(spaced("/")),
    "underscores": json.dumps(spaced("_")),
    "no-break spaces": json.dumps(spaced("\u00a0")),
    "tabs": json.dumps(spaced("\t")),
    "newlines": json.dumps(spaced("\n")),
    "full-width digits": json.dumps("".join(chr(0xFF10 + int(c)) for c in PAN)),
    "in a sentence": json.dumps(f"card {spaced('. ')} exp 12/30"),
    "glued to letters": json.dumps(f"ref{PAN}x"),
    "as a JSON number": PAN,
}


@pytest.mark.parametrize("written", CARD_WRITINGS.values(), ids=CARD_WRITINGS.keys())
def test_a_card_number_in_any_writing_is_refused(api: MerchantClient, written: str) -> None:
    raw = json.dumps(VISA)[:-1] + f', "description": {written}}}'
    response = post(api, "/v1/payments", raw, HTTP_IDEMPOTENCY_KEY="k-1")
    assert error(response) == (400, "card_data_not_allowed")
    assert_nothing_stored()


def test_a_card_number_in_a_metadata_key_is_refused_and_not_echoed(api: MerchantClient) -> None:
    raw = json.dumps({**VISA, "metadata": {spaced("."): "x"}})
    response = post(api, "/v1/payments", raw)
    assert error(response) == (400, "card_data_not_allowed")
    assert "4242" not in response.content.decode()
    assert_nothing_stored()


def test_a_card_number_in_a_refund_reason_is_refused(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "completed")
    raw = json.dumps({"amount": 100, "reason": f"refund to {spaced('/')}"})
    response = post(api, f"/v1/payments/{payment.id}/refunds", raw, HTTP_IDEMPOTENCY_KEY="r-1")
    assert error(response) == (400, "card_data_not_allowed")
    assert Refund.objects.count() == 0
    assert IdempotencyKey.objects.count() == 0


def test_a_card_number_in_a_webhook_url_is_refused(api: MerchantClient, settings) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    raw = json.dumps({"url": f"https://hooks.example.com/{spaced('-')}", "events": ["payment.*"]})
    response = post(api, "/v1/webhook_endpoints", raw)
    assert error(response) == (400, "card_data_not_allowed")
    assert WebhookEndpoint.objects.count() == 0


def test_a_card_number_as_the_idempotency_key_is_refused(api: MerchantClient) -> None:
    response = post(api, "/v1/payments", json.dumps(VISA), HTTP_IDEMPOTENCY_KEY=PAN)
    assert error(response) == (400, "card_data_not_allowed")
    assert_nothing_stored()


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03 08:15:30.123",  # a timestamp: mixed separators, short groups
        "order 4242424242424241",  # fails Luhn
        "1234 5678",  # too short
    ],
)
def test_numbers_that_are_not_card_numbers_pass(api: MerchantClient, text: str) -> None:
    response = post(api, "/v1/payments", json.dumps({**VISA, "description": text}))
    assert response.status_code == 201, response.content


# --- text and JSON the server cannot store or parse ---

UNREADABLE = {
    "NUL in a value": (json.dumps({**VISA, "description": "a\u0000b"}), "parameter_invalid"),
    "NUL in a nested value": (
        json.dumps({**VISA, "metadata": {"k": "a\u0000"}}),
        "parameter_invalid",
    ),
    "a lone surrogate": (
        json.dumps(VISA)[:-1] + ', "description": "x\\ud800y"}',
        "parameter_invalid",
    ),
    "NUL in an unknown key": (json.dumps({**VISA, "bad\u0000key": 1}), "parameter_invalid"),
    "nested 950 deep": (
        json.dumps(VISA)[:-1] + ', "metadata": ' + "[" * 950 + "]" * 950 + "}",
        "json_too_deep",
    ),
    "nested 65 deep": (
        json.dumps(VISA)[:-1] + ', "metadata": ' + "[" * 64 + "]" * 64 + "}",
        "json_too_deep",
    ),
}


@pytest.mark.parametrize("raw,code", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_bodies_are_400_and_store_nothing(
    api: MerchantClient, raw: str, code: str
) -> None:
    response = post(api, "/v1/payments", raw, HTTP_IDEMPOTENCY_KEY="same-key")
    assert error(response) == (400, code)
    assert_nothing_stored()
    # The key was not spent: the same key with a good body runs.
    again = post(api, "/v1/payments", json.dumps(VISA), HTTP_IDEMPOTENCY_KEY="same-key")
    assert again.status_code == 201


def test_64_levels_are_allowed_by_the_parser(api: MerchantClient) -> None:
    # The top-level object is level 1: metadata holding 63 levels of lists is 64 in all, read
    # by the parser and then refused by metadata's own rule (no json_too_deep).
    raw = json.dumps(VISA)[:-1] + ', "metadata": ' + "[" * 63 + "]" * 63 + "}"
    response = post(api, "/v1/payments", raw)
    assert error(response) == (400, "metadata_invalid")


def test_unreadable_refund_bodies_are_400(api: MerchantClient) -> None:
    payment = payment_in(api.merchant, "completed")
    raw = json.dumps({"amount": 100, "reason": "x\u0000"})
    response = post(api, f"/v1/payments/{payment.id}/refunds", raw, HTTP_IDEMPOTENCY_KEY="r-1")
    assert error(response) == (400, "parameter_invalid")
    assert Refund.objects.count() == IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/payments/pay_%00",
        "/v1/payments/pay_%00/events",
        "/v1/payments?starting_after=pay_%00",
        "/v1/payments?status=%00",
        "/v1/payments?%00=1",
        "/v1/webhook_endpoints/we_%00",
    ],
)
def test_nul_in_a_path_or_query_is_400(api: MerchantClient, path: str) -> None:
    assert error(api.get(path)) == (400, "parameter_invalid")


def test_nul_in_a_path_of_a_write_is_400_and_stores_nothing(api: MerchantClient) -> None:
    response = post(api, "/v1/payments/pay_%00/capture", "{}", HTTP_IDEMPOTENCY_KEY="c-1")
    assert error(response) == (400, "parameter_invalid")
    assert IdempotencyKey.objects.count() == 0
