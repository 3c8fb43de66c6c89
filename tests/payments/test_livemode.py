"""Test and live modes: a key sees and makes only objects of its own mode, test payments route
only to sandboxes and live payments never do, and idempotency keys are per mode."""

from __future__ import annotations

import json

import pytest

from gateways.sandbox.ledger import charge_count
from payments.merchants import api_key_create
from payments.models import Payment, PaymentEvent, Refund
from payments.services import refund_create
from payments.tasks import payment_process
from routing.constraints import static_reason
from routing.types import GatewaySpec, PaymentFacts
from tests.conftest import VISA, MerchantClient
from tests.payments.helpers import payment_in
from tests.payments.test_api import error
from tests.payments.test_api_keys import client_for, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(api: MerchantClient):
    """A live key of the same merchant as ``api`` (a test key)."""
    _key, raw = api_key_create(merchant=api.merchant, live=True)
    return client_for(raw)


def test_a_payment_has_the_mode_of_the_key_that_made_it(api: MerchantClient, live) -> None:
    test_payment = post(api, "/v1/payments", VISA).json()
    live_payment = post(live, "/v1/payments", VISA).json()
    assert (test_payment["livemode"], live_payment["livemode"]) == (False, True)
    assert Payment.objects.get(pk=live_payment["id"]).livemode is True
    events = PaymentEvent.objects.filter(payment_id=live_payment["id"])
    assert [event.livemode for event in events] == [True]


def test_a_key_sees_only_objects_of_its_mode(api: MerchantClient, live) -> None:
    test_payment = payment_in(api.merchant, "completed")
    live_payment = post(live, "/v1/payments", VISA).json()
    refund = refund_create(payment_id=test_payment.id, actor="test", amount=100)
    assert Refund.objects.get(pk=refund.pk).livemode is False

    assert error(api.get(f"/v1/payments/{live_payment['id']}"))[:2] == (404, "resource_missing")
    assert error(live.get(f"/v1/payments/{test_payment.id}"))[:2] == (404, "resource_missing")
    assert [p["id"] for p in api.get("/v1/payments").json()["data"]] == [test_payment.id]
    assert [p["id"] for p in live.get("/v1/payments").json()["data"]] == [live_payment["id"]]

    live_events = live.get("/v1/events").json()["data"]
    assert {event["payment"] for event in live_events} == {live_payment["id"]}
    assert all(event["livemode"] for event in live_events)
    test_event = PaymentEvent.objects.filter(payment=test_payment).first()
    assert error(live.get(f"/v1/events/{test_event.id}"))[:2] == (404, "resource_missing")
    assert error(live.get(f"/v1/payments/{test_payment.id}/events"))[:2] == (
        404,
        "resource_missing",
    )

    assert live.get("/v1/refunds").json()["data"] == []
    assert error(live.get(f"/v1/refunds/{refund.id}"))[:2] == (404, "resource_missing")
    assert api.get(f"/v1/refunds/{refund.id}").json()["livemode"] is False
    # Nor act on them: capture, cancel, update, refund all answer 404 across modes.
    for path in ("capture", "cancel", "refunds"):
        assert error(post(live, f"/v1/payments/{test_payment.id}/{path}", {}))[:2] == (
            404,
            "resource_missing",
        ), path
    assert error(post(live, f"/v1/payments/{test_payment.id}", {"description": "x"}))[:2] == (
        404,
        "resource_missing",
    )


def test_idempotency_keys_are_per_mode(api: MerchantClient, live) -> None:
    first = post(api, "/v1/payments", VISA, HTTP_IDEMPOTENCY_KEY="order-1")
    other_body = {**VISA, "amount": 3000}
    second = post(live, "/v1/payments", other_body, HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert (first.json()["livemode"], second.json()["livemode"]) == (False, True)


def test_a_live_payment_never_reaches_a_sandbox(api: MerchantClient, live) -> None:
    # The merchant has only the sandboxes: a live payment fails without any gateway call.
    created = post(live, "/v1/payments", VISA).json()
    payment_process.apply(args=[created["id"]])
    payment = Payment.objects.get(pk=created["id"])
    assert (payment.status, payment.failure_code) == ("failed", "no_gateway_available")
    assert charge_count(created["id"]) == 0
    assert not payment.attempts.exists()


def test_a_test_payment_still_reaches_the_sandbox(api: MerchantClient) -> None:
    created = post(api, "/v1/payments", VISA).json()
    payment_process.apply(args=[created["id"]])
    assert Payment.objects.get(pk=created["id"]).status != "failed"


@pytest.mark.parametrize(
    ("livemode", "adapter", "reason"),
    [
        (True, "sandbox", "sandbox_in_live_mode"),
        (False, "stripe", "live_gateway_in_test_mode"),
        (True, "stripe", None),
        (False, "sandbox", None),
    ],
)
def test_routing_keeps_each_mode_to_its_gateways(
    livemode: bool, adapter: str, reason: str | None
) -> None:
    facts = PaymentFacts(
        payment_id="pay_x", merchant_id="mer_x", amount=100, currency="USD", livemode=livemode
    )
    assert static_reason(facts, GatewaySpec(name="g", adapter=adapter)) == reason


def test_the_outbox_message_says_the_mode(live) -> None:
    from outbox.models import OutboxMessage

    created = post(live, "/v1/payments", VISA).json()
    message = OutboxMessage.objects.get(aggregate_id=created["id"])
    assert message.payload["livemode"] is True
    assert json.dumps(message.payload)  # as the relay publishes it


# --- webhook endpoints ---


def test_webhook_endpoints_are_per_mode_and_hear_only_their_modes_events(
    api: MerchantClient, live, settings
) -> None:
    from outbox.types import OutboxEvent
    from webhooks.models import WebhookDelivery, WebhookEndpoint
    from webhooks.services import webhook_deliveries_create

    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    body = {"url": "https://hooks.example.com/a", "events": ["*"]}
    test_endpoint = post(api, "/v1/webhook_endpoints", body).json()
    live_endpoint = post(live, "/v1/webhook_endpoints", body).json()
    assert (test_endpoint["livemode"], live_endpoint["livemode"]) == (False, True)
    assert [e["id"] for e in live.get("/v1/webhook_endpoints").json()["data"]] == [
        live_endpoint["id"]
    ]
    assert error(live.get(f"/v1/webhook_endpoints/{test_endpoint['id']}"))[:2] == (
        404,
        "resource_missing",
    )
    assert error(live.delete(f"/v1/webhook_endpoints/{test_endpoint['id']}"))[:2] == (
        404,
        "resource_missing",
    )
    rotate = f"/v1/webhook_endpoints/{test_endpoint['id']}/rotate_secret"
    assert error(post(live, rotate, {}))[:2] == (404, "resource_missing")
    assert WebhookEndpoint.objects.get(pk=test_endpoint["id"]).status == "enabled"

    live_payment = post(live, "/v1/payments", VISA).json()
    test_payment = post(api, "/v1/payments", VISA).json()
    events = [
        OutboxEvent(
            event_id=event.id,
            event_type=event.type,
            aggregate_type="payment",
            aggregate_id=event.payment_id,
            sequence=event.sequence,
            merchant_id=api.merchant.id,
            payload={"livemode": event.livemode},
        )
        for event in PaymentEvent.objects.filter(
            payment_id__in=[live_payment["id"], test_payment["id"]]
        )
    ]
    webhook_deliveries_create(events)
    delivered = {(d.endpoint_id, d.aggregate_id) for d in WebhookDelivery.objects.all()}
    assert delivered == {
        (live_endpoint["id"], live_payment["id"]),
        (test_endpoint["id"], test_payment["id"]),
    }
