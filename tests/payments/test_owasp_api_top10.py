"""The OWASP API Security Top 10 (2023), item by item: how AegisPay holds each that applies.

Each test is named after its item and attacks the real API the way the item describes; the
deeper tests of each defence live beside the code they test, and are named in the docstrings.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from payments.merchants import api_key_create
from payments.models import ApiKey, IdempotencyKey, Payment, PaymentEvent, Refund
from payments.services import refund_create
from tests.conftest import VISA, MerchantClient
from tests.payments.helpers import payment_in
from tests.payments.test_api import error

pytestmark = pytest.mark.django_db


def post(client: APIClient, path: str, body: object, **headers: str):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def test_api1_broken_object_level_authorization(
    api: MerchantClient, other_api: MerchantClient, settings
) -> None:
    """Every object is looked up with the caller's merchant and mode: another merchant's id is
    the 404 of a missing one, for reads and writes (test_api.py, test_livemode.py)."""
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    payment = payment_in(other_api.merchant, "completed")
    refund = refund_create(payment_id=payment.id, actor="test", amount=10)
    event = PaymentEvent.objects.filter(payment=payment).first()
    endpoint = post(
        other_api, "/v1/webhook_endpoints", {"url": "https://h.example.com/", "events": ["*"]}
    ).json()
    key = ApiKey.objects.get(merchant=other_api.merchant)
    for response in (
        api.get(f"/v1/payments/{payment.id}"),
        api.get(f"/v1/payments/{payment.id}/events"),
        api.get(f"/v1/payments/{payment.id}/refunds"),
        api.get(f"/v1/refunds/{refund.id}"),
        api.get(f"/v1/events/{event.id}"),
        api.get(f"/v1/webhook_endpoints/{endpoint['id']}"),
        post(api, f"/v1/payments/{payment.id}/refunds", {"amount": 1}),
        post(api, f"/v1/payments/{payment.id}", {"description": "mine now"}),
        api.delete(f"/v1/webhook_endpoints/{endpoint['id']}"),
        api.delete(f"/v1/api_keys/{key.id}"),
    ):
        assert error(response)[:2] == (404, "resource_missing")
    assert Refund.objects.filter(payment=payment).count() == 1
    assert Payment.objects.get(pk=payment.id).description == ""
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer sk_test_not-a-key",
        "Bearer  {key}",  # two spaces
        "bearer {key}",
        "Basic {key}",
        "{key}",
    ],
)
def test_api2_broken_authentication(api: MerchantClient, header: str | None) -> None:
    """Exactly ``Bearer <key>``; keys are stored as SHA-256 only; bad keys are rate limited
    per client address (test_rate_limits.py); revoked and expired keys are refused
    (test_api_keys.py)."""
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header.format(key=api.api_key))
    status, code, _ = error(client.get("/v1/payments"))
    assert status == 401
    assert code in ("authentication_required", "invalid_api_key")
    assert not ApiKey.objects.filter(key_hash=api.api_key).exists()


def test_api3_broken_object_property_level_authorization(api: MerchantClient) -> None:
    """No mass assignment: a body may set only what its serializer declares, every other
    property is ``400 parameter_unknown``; answers never carry a key's hash or a secret."""
    for body in (
        {**VISA, "status": "completed"},
        {**VISA, "amount_captured": 2000},
        {**VISA, "livemode": True},
        {**VISA, "merchant": "mer_someone_else"},
    ):
        assert error(post(api, "/v1/payments", body))[:2] == (400, "parameter_unknown")
    payment = payment_in(api.merchant, "authorized")
    for field in ("status", "amount", "version", "gateway"):
        response = post(api, f"/v1/payments/{payment.id}", {field: "x"})
        assert error(response)[:2] == (400, "parameter_unknown"), field
    assert not Payment.objects.filter(merchant=api.merchant).exclude(pk=payment.id).exists()
    listed = json.dumps(api.get("/v1/api_keys").json())
    assert "key_hash" not in listed and api.api_key not in listed


def test_api4_unrestricted_resource_consumption_rate_limits(api: MerchantClient) -> None:
    """Budgets per key (and per client address for bad keys, test_rate_limits.py): over
    budget is 429 with Retry-After."""
    ApiKey.objects.filter(merchant=api.merchant).update(
        rate_limit_per_second=0.001, rate_limit_burst=2
    )
    answers = [api.get("/v1/payments") for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[-1]["Retry-After"]) >= 1


def test_api4_unrestricted_resource_consumption_bounds(api: MerchantClient, settings) -> None:
    """Bodies bounded (413), lists bounded (limit 1 to 100), JSON depth bounded."""
    assert error(api.get("/v1/payments?limit=101"))[:2] == (400, "parameter_invalid")
    deep: object = "x"
    for _ in range(100):
        deep = {"a": deep}
    assert error(post(api, "/v1/payments", deep))[:2] == (400, "json_too_deep")
    big = {**VISA, "description": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)}
    assert error(post(api, "/v1/payments", big))[:2] == (413, "request_too_large")
    assert not Payment.objects.filter(merchant=api.merchant).exists()


def test_api5_broken_function_level_authorization(api: MerchantClient) -> None:
    """A restricted key does only what its scopes grant (403 scope_missing) and cannot make a
    key that may do more; a merchant's key opens neither the back office nor /metrics."""
    _key, raw = api_key_create(
        merchant=api.merchant, restricted=True, scopes=["payments:read", "keys:write"]
    )
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert error(post(reader, "/v1/payments", VISA))[:2] == (403, "scope_missing")
    assert error(post(reader, "/v1/api_keys", {}))[:2] == (403, "scope_missing")
    admin = Client(HTTP_AUTHORIZATION=f"Bearer {api.api_key}")
    assert admin.get("/admin/payments/payment/").status_code == 302  # to the login page
    with override_settings(DEBUG=False, METRICS_TOKEN="m" * 40):
        assert admin.get("/metrics").status_code == 401


def test_api6_unrestricted_access_to_sensitive_business_flows(api: MerchantClient) -> None:
    """Charging and refunding cannot be repeated by replaying: one Idempotency-Key makes one
    payment; refunds never exceed what was captured (test_idempotency.py and the simulator
    for the races); velocity and amount rules stop bulk card testing (test_risk_and_hooks.py)."""
    answers = [post(api, "/v1/payments", VISA, HTTP_IDEMPOTENCY_KEY="order-9") for _ in range(3)]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert Payment.objects.filter(merchant=api.merchant).count() == 1
    assert IdempotencyKey.objects.filter(merchant=api.merchant).count() == 1
    payment = payment_in(api.merchant, "completed")
    too_much = post(api, f"/v1/payments/{payment.id}/refunds", {"amount": payment.amount + 1})
    assert error(too_much)[:2] == (422, "amount_exceeded")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",
    ],
)
def test_api7_server_side_request_forgery(api: MerchantClient, url: str) -> None:
    """Webhook URLs must be https and must not resolve to a private, loopback, link-local or
    metadata address; deliveries connect to the address checked and never follow redirects
    (webhooks/url_guard.py, webhooks/transport.py)."""
    with override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False):
        response = post(api, "/v1/webhook_endpoints", {"url": url, "events": ["*"]})
    assert error(response)[:2] == (400, "url_not_allowed")


def test_api8_security_misconfiguration(api: MerchantClient) -> None:
    """Errors never show a stack trace or an HTML page; unknown URLs answer the error object;
    production settings pass ``check --deploy`` (test_deploy.py) and the server's own refusals
    are JSON too (test_server_errors.py)."""
    with override_settings(DEBUG=False):
        response = Client().get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "resource_missing"
    bad = post(api, "/v1/payments", {**VISA, "amount": "lots"})
    assert "Traceback" not in bad.content.decode()


def test_api9_improper_inventory_management(api: MerchantClient) -> None:
    """The served schema lists every route of the API, and nothing the API does not serve."""
    schema = Client().get("/api/schema/?format=json").json()

    def routes(patterns: list, prefix: str = "") -> set[str]:
        found: set[str] = set()
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found |= routes(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                found.add("/" + prefix + str(pattern.pattern))
        return found

    served = {
        route.replace("<str:", "{").replace(">", "}")
        for route in routes(get_resolver().url_patterns)
        if route.startswith("/v1/")
    }
    documented = {path for path in schema["paths"] if path.startswith("/v1/")}
    assert {_generic(p) for p in served} == {_generic(p) for p in documented}


def _generic(path: str) -> str:
    """A path with every ``{name}`` as ``{}``, so route and schema names may differ."""
    import re

    return re.sub(r"\{[^}]+\}", "{}", path)


def test_api10_unsafe_consumption_of_apis(api: MerchantClient) -> None:
    """What a gateway answers is read, never trusted blindly: a lost or unreadable answer is
    ``unknown`` and is resolved by a lookup at the same gateway, never guessed, so a timeout
    after the gateway took the charge never charges twice (test_gateway_path.py and the
    simulator, ``make simulate``)."""
    from gateways.sandbox.ledger import charge_count
    from payments.tasks import payment_process

    response = post(
        api, "/v1/payments", {**VISA, "payment_method": {"type": "card", "token": "tok_timeout"}}
    )
    payment_id = response.json()["id"]
    for _ in range(3):
        payment_process.apply(args=[payment_id])
    assert charge_count(payment_id) == 1
