"""Merchant webhooks: URL policy, patterns, deliveries per endpoint and event, sending through
a real local HTTP receiver, retries and their schedule, leases, resend and the staff admin."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import standardwebhooks
import stripe
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client, override_settings
from kombu import Connection

from aegispay.celery import app as celery_app
from outbox.models import OutboxMessage
from outbox.types import OutboxEvent
from tests.webhooks.receivers import Receiver
from webhooks.errors import WebhookNotFound
from webhooks.events import event_matches, webhook_events_validate
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.selectors import webhook_deliveries_due
from webhooks.services import (
    DeliveryOutcome,
    webhook_backoff_ceiling,
    webhook_backoff_seconds,
    webhook_deliveries_create,
    webhook_delivery_attempt,
    webhook_delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_rotate_secret,
)
from webhooks.signing import HEADER, SignatureVerificationError, standard_key, verify
from webhooks.tasks import webhook_deliveries_sweep, webhook_delivery_send
from webhooks.url_guard import webhook_url_validate

MERCHANT = "mer_webhooks_a"
OTHER_MERCHANT = "mer_webhooks_b"
PUBLIC_URL = "https://93.184.215.14/hooks"


def event(
    event_type: str = "payment.captured", merchant_id: str = MERCHANT, sequence: int = 4
) -> OutboxEvent:
    event_id = f"evt_{uuid.uuid4().hex[:26]}"
    payload = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "payment": "pay_webhooktest",
        "sequence": sequence,
        "data": {"amount_captured": 2000},
    }
    return OutboxEvent(
        event_id=event_id,
        event_type=event_type,
        aggregate_type="payment",
        aggregate_id="pay_webhooktest",
        sequence=sequence,
        merchant_id=merchant_id,
        payload=payload,
    )


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(Exception) as raised:
        call()
    return raised.value.code  # type: ignore[attr-defined]


# --- a real receiver -----------------------------------------------------------------------


def subscribe(receiver: Receiver, events: list[str] | None = None) -> WebhookEndpoint:
    """An endpoint of ``MERCHANT`` for the receiver, which learns the secret."""
    endpoint, receiver.secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url=receiver.url, events=events or ["*"]
    )
    return endpoint


def deliveries_for(*events: OutboxEvent) -> list[WebhookDelivery]:
    """Hand events over as the relay does (inside its transaction); the deliveries made."""
    with transaction.atomic():
        webhook_deliveries_create(list(events))
    return list(
        WebhookDelivery.objects.filter(event_id__in=[e.event_id for e in events]).order_by("id")
    )


def broker_messages() -> list[tuple[str, list[Any]]]:
    """Take every message off the Celery queue, oldest first: (task name, args)."""
    taken = []
    with Connection(celery_app.conf.broker_url) as broker:
        queue = broker.SimpleQueue(celery_app.conf.task_default_queue)
        while True:
            try:
                message = queue.get_nowait()
            except queue.Empty:
                break
            taken.append((message.headers["task"], message.decode()[0]))
            message.ack()
        queue.close()
    return taken


@pytest.fixture
def broker() -> Iterator[None]:
    """An empty Celery queue before and after: these tests read what was enqueued."""
    celery_app.control.purge()
    yield
    celery_app.control.purge()


pytestmark = pytest.mark.usefixtures("broker")
PRIVATE_OK = override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=True)
STRICT = override_settings(WEBHOOK_ALLOW_PRIVATE_URLS=False)


# --- URL policy ------------------------------------------------------------------------------


@STRICT
@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hooks",
        "https://127.0.0.1/hooks",
        "https://127.1/hooks",
        "https://2130706433/hooks",
        "https://localhost/hooks",
        "https://10.1.2.3/hooks",
        "https://172.16.0.1/hooks",
        "https://192.168.1.20/hooks",
        "https://100.64.0.1/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/hooks",
        "https://224.0.0.1/hooks",
        "https://240.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://[::]/hooks",
        "https://[fe80::1]/hooks",
        "https://[fc00::1]/hooks",
        "https://[ff02::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://[::ffff:10.0.0.1]/hooks",
        "https://[::ffff:169.254.169.254]/hooks",
        "https://[64:ff9b::a00:1]/hooks",
        "https://[2002:a00:1::]/hooks",
    ],
)
def test_http_and_private_addresses_are_not_allowed(url: str) -> None:
    assert error_code(lambda: webhook_url_validate(url)) == "url_not_allowed"


@STRICT
@pytest.mark.parametrize(
    "url",
    [
        "",
        None,
        42,
        "hooks.example.com/aegispay",
        "ftp://93.184.215.14/hooks",
        "javascript:alert(1)",
        "https://",
        "https://user:password@93.184.215.14/hooks",
        "https://user@93.184.215.14/hooks",
        "https://93.184.215.14:99999/hooks",
        "https://[::1/hooks",
        "https://93.184.215.14/ho oks",
        "https://does-not-exist.invalid/hooks",
        "https://93.184.215.14/" + "a" * 2048,
    ],
)
def test_malformed_urls_are_invalid(url: object) -> None:
    assert error_code(lambda: webhook_url_validate(url)) == "url_invalid"


@STRICT
@pytest.mark.parametrize(
    "url",
    [PUBLIC_URL, "https://93.184.215.14:8443/hooks?tag=a", "https://[2606:4700:4700::1111]/h"],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert webhook_url_validate(url) == url


@PRIVATE_OK
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hooks", "https://[::1]/hooks", "https://hooks.internal/x"]
)
def test_development_allows_http_and_private_hosts(url: str) -> None:
    assert webhook_url_validate(url) == url


@PRIVATE_OK
def test_development_still_refuses_credentials_and_other_schemes() -> None:
    assert error_code(lambda: webhook_url_validate("http://u:p@127.0.0.1/")) == "url_invalid"
    assert error_code(lambda: webhook_url_validate("file:///etc/passwd")) == "url_invalid"


# --- event patterns -------------------------------------------------------------------------


def test_patterns_are_validated_and_deduplicated_in_order() -> None:
    patterns = ["payment.captured", "refund.*", "payment.captured", "*"]
    assert webhook_events_validate(patterns) == ["payment.captured", "refund.*", "*"]


@pytest.mark.parametrize(
    "events",
    [
        [],
        "payment.*",
        None,
        ["payment.capturedd"],
        ["payments.*"],
        ["payment.*x"],
        ["charge.succeeded"],
        ["payment.captured "],
        ["PAYMENT.CAPTURED"],
        ["*.*"],
        [1],
        [["*"]],
        ["*"] * 51,
    ],
)
def test_bad_patterns_are_refused(events: object) -> None:
    assert error_code(lambda: webhook_events_validate(events)) == "events_invalid"


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["*"], "refund.failed", True),
        (["payment.*"], "payment.captured", True),
        (["payment.*"], "refund.created", False),
        (["refund.*"], "refund.created", True),
        (["payment.captured"], "payment.captured", True),
        (["payment.captured"], "payment.cancelled", False),
        (["payment.authorized", "refund.*"], "refund.succeeded", True),
        (["payment.authorized", "refund.*"], "payment.failed", False),
    ],
)
def test_patterns_match_event_types(patterns: list[str], event_type: str, expected: bool) -> None:
    assert event_matches(patterns, event_type) is expected


# --- endpoints --------------------------------------------------------------------------------


@PRIVATE_OK
def test_an_endpoint_gets_a_prefixed_id_and_a_secret(db: None) -> None:
    endpoint, secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url="https://hooks.example.com/a", events=["payment.*"]
    )
    stored = WebhookEndpoint.objects.get(pk=endpoint.id)
    assert endpoint.id.startswith("we_") and len(endpoint.id) == 29
    assert secret.startswith("whsec_") and len(secret) > 40
    assert (stored.secret, stored.status, stored.events) == (secret, "enabled", ["payment.*"])


@STRICT
def test_a_refused_endpoint_is_not_stored(db: None) -> None:
    code = error_code(
        lambda: webhook_endpoint_create(
            merchant_id=MERCHANT, url="https://10.0.0.5/hooks", events=["*"]
        )
    )
    assert code == "url_not_allowed"
    assert not WebhookEndpoint.objects.exists()


@PRIVATE_OK
def test_endpoint_ids_sort_by_creation(db: None) -> None:
    ids = []
    for _ in range(5):
        ids.append(
            webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])[0].id
        )
        time.sleep(0.002)  # ids of the same millisecond sort randomly among themselves
    assert ids == sorted(ids)


@PRIVATE_OK
def test_disable_is_idempotent_and_scoped_to_the_merchant(db: None) -> None:
    endpoint, _ = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    with pytest.raises(WebhookNotFound):
        webhook_endpoint_disable(
            merchant_id=OTHER_MERCHANT, livemode=False, endpoint_id=endpoint.id
        )
    first = webhook_endpoint_disable(merchant_id=MERCHANT, livemode=False, endpoint_id=endpoint.id)
    second = webhook_endpoint_disable(merchant_id=MERCHANT, livemode=False, endpoint_id=endpoint.id)
    assert (first.status, second.status) == ("disabled", "disabled")
    assert first.disabled_at == second.disabled_at


# --- deliveries ---------------------------------------------------------------------------------


@PRIVATE_OK
def test_one_delivery_per_matching_enabled_endpoint_and_event(transactional_db: None) -> None:
    everything, _ = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    refunds, _ = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["refund.*"])
    captures, _ = webhook_endpoint_create(
        merchant_id=MERCHANT, url=PUBLIC_URL, events=["payment.captured"]
    )
    disabled, _ = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    webhook_endpoint_disable(merchant_id=MERCHANT, livemode=False, endpoint_id=disabled.id)
    other, _ = webhook_endpoint_create(merchant_id=OTHER_MERCHANT, url=PUBLIC_URL, events=["*"])
    captured, refunded = event("payment.captured"), event("refund.created", sequence=5)

    made = deliveries_for(captured, refunded)

    assert {(d.endpoint_id, d.event_id) for d in made} == {
        (everything.id, captured.event_id),
        (captures.id, captured.event_id),
        (everything.id, refunded.event_id),
        (refunds.id, refunded.event_id),
    }
    assert all(d.payload == captured.payload for d in made if d.event_id == captured.event_id)
    assert not WebhookDelivery.objects.filter(endpoint__in=[disabled, other]).exists()


@PRIVATE_OK
def test_handing_over_the_same_events_twice_creates_and_enqueues_nothing_new(
    transactional_db: None,
) -> None:
    webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["payment.*"])
    events = [event("payment.authorized", sequence=3), event("payment.captured")]

    first = deliveries_for(*events)
    enqueued = broker_messages()
    second = deliveries_for(*events)

    assert len(first) == 4
    assert [d.pk for d in second] == [d.pk for d in first]
    assert enqueued == [("outbox.webhook_tasks.webhook_delivery_send", [d.pk]) for d in first]
    assert broker_messages() == []


@PRIVATE_OK
def test_nothing_is_enqueued_when_the_relay_transaction_rolls_back(transactional_db: None) -> None:
    webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    with pytest.raises(RuntimeError), transaction.atomic():
        webhook_deliveries_create([event()])
        raise RuntimeError("the relay failed to mark its batch")
    assert not WebhookDelivery.objects.exists()
    assert broker_messages() == []


# --- sending --------------------------------------------------------------------------------------


@PRIVATE_OK
def test_500_then_200_reaches_the_receiver_twice_and_is_processed_once(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[500])
    subscribe(receiver)
    published = event()
    (delivery,) = deliveries_for(published)

    first = webhook_delivery_attempt(delivery_id=delivery.pk)
    retry_at = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
    too_early = webhook_delivery_attempt(delivery_id=delivery.pk)
    second = webhook_delivery_attempt(delivery_id=delivery.pk, now=retry_at)
    after = webhook_delivery_attempt(delivery_id=delivery.pk, now=retry_at + timedelta(days=2))

    assert (first, too_early, second, after) == ("retrying", "skipped", "succeeded", "skipped")
    assert len(receiver.requests) == 2
    assert receiver.processed == [published.event_id]
    assert receiver.refused == 0
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts, stored.last_status_code) == ("succeeded", 2, 200)
    assert stored.delivered_at is not None and stored.next_attempt_at is None
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("id"))
    assert [(a.status_code, a.error) for a in attempts] == [(500, "HTTP 500"), (200, "")]
    assert all(a.latency_ms >= 0 for a in attempts)
    assert attempts[1].response_excerpt == '{"received": true}'


@PRIVATE_OK
def test_the_request_is_the_signed_event_as_json(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    subscribe(receiver)
    published = event()
    (delivery,) = deliveries_for(published)

    webhook_delivery_attempt(delivery_id=delivery.pk)

    ((headers, body),) = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert abs(verify(secret=receiver.secret, body=body, header=headers[HEADER]) - time.time()) < 5
    assert json.loads(body) == published.payload


@PRIVATE_OK
def test_standard_webhooks_and_stripe_receivers_verify_a_delivery(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    """Receivers written with other people's libraries verify AegisPay's deliveries as they are:
    the Standard Webhooks reference library with its three headers, and Stripe's own
    WebhookSignature with AegisPay-Signature."""
    receiver = receivers()
    subscribe(receiver)
    published = event()
    (delivery,) = deliveries_for(published)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    ((headers, body),) = receiver.requests
    assert receiver.secret.startswith("whsec_")

    standard = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    assert standard["webhook-id"] == published.event_id
    assert standard["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(receiver.secret).verify(body, standard) == published.payload
    stripe.WebhookSignature.verify_header(body, headers[HEADER], receiver.secret, tolerance=300)

    # Neither accepts a body that was changed, or another secret.
    tampered = body.replace(b'"id"', b'"Id"', 1)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(receiver.secret).verify(tampered, standard)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(tampered, headers[HEADER], receiver.secret, 300)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(body, standard)


@PRIVATE_OK
def test_a_retry_keeps_the_webhook_id(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[500])
    subscribe(receiver)
    published = event()
    (delivery,) = deliveries_for(published)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    retry_at = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
    webhook_delivery_attempt(delivery_id=delivery.pk, now=retry_at)
    ids = [dict((k.lower(), v) for k, v in h.items())["webhook-id"] for h, _ in receiver.requests]
    assert ids == [published.event_id, published.event_id]


@PRIVATE_OK
@pytest.mark.parametrize("overlap", [3600, 0])
def test_after_a_rotation_both_secrets_sign_until_the_overlap_ends(
    transactional_db: None, receivers: Callable[..., Receiver], overlap: int
) -> None:
    receiver = receivers()
    endpoint = subscribe(receiver)
    old = receiver.secret
    _, new = webhook_endpoint_rotate_secret(
        merchant_id=MERCHANT, livemode=False, endpoint_id=endpoint.pk, overlap_seconds=overlap
    )
    receiver.secret = new  # the receiver has moved to the new secret
    published = event()
    (delivery,) = deliveries_for(published)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "succeeded"
    ((headers, body),) = receiver.requests
    standard = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    assert standardwebhooks.Webhook(new).verify(body, standard) == published.payload
    verify(secret=new, body=body, header=headers[HEADER])
    if overlap:  # a receiver still on the old secret verifies too
        assert standardwebhooks.Webhook(old).verify(body, standard) == published.payload
        verify(secret=old, body=body, header=headers[HEADER])
    else:
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(old).verify(body, standard)
        with pytest.raises(SignatureVerificationError):
            verify(secret=old, body=body, header=headers[HEADER])


def test_secrets_made_before_the_standard_form_still_sign() -> None:
    """A secret of the earlier form (URL-safe base64, no padding) keeps working: its Standard
    Webhooks key is its own bytes, read as URL-safe base64."""
    legacy = "whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode().rstrip("=")
    assert standard_key(legacy) == b"\xfb" * 32
    modern = "whsec_" + base64.b64encode(b"\xfb" * 32).decode()
    assert standard_key(modern) == b"\xfb" * 32


@PRIVATE_OK
def test_latency_and_the_status_code_are_recorded(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[503], delay=0.25)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())

    webhook_delivery_attempt(delivery_id=delivery.pk)

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code == 503
    assert 250 <= attempt.latency_ms < 5000
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.last_status_code, stored.last_error) == (503, "HTTP 503")


@PRIVATE_OK
def test_any_answer_body_is_recorded_as_a_short_excerpt(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[500], answer=b"\x00\xff" + b"x" * 5000)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == "retrying"
    excerpt = WebhookAttempt.objects.get(delivery=delivery).response_excerpt
    assert excerpt == "\ufffd\ufffd" + "x" * 498


@PRIVATE_OK
def test_redirects_are_not_followed(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    target = receivers()
    receiver = receivers(statuses=[302], location=target.url)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == "retrying"
    assert target.requests == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_status_code == 302


@PRIVATE_OK
def test_the_url_is_checked_again_at_send_time(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    subscribe(receiver)
    (delivery,) = deliveries_for(event())

    with STRICT:
        outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == "retrying"
    assert receiver.requests == []
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code is None
    assert attempt.error.startswith("url_not_allowed")


@PRIVATE_OK
def test_a_failing_endpoint_does_not_hold_up_another(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    hanging = receivers(delay=3)
    healthy = receivers()
    subscribe(hanging)
    endpoint, healthy.secret = webhook_endpoint_create(
        merchant_id=MERCHANT, url=healthy.url, events=["payment.*"]
    )
    published = event()
    deliveries_for(published)

    started = time.monotonic()
    with override_settings(WEBHOOK_TIMEOUT_SECONDS=0.5):
        outcomes = [webhook_delivery_send.run(pk) for pk in webhook_deliveries_due()]
    elapsed = time.monotonic() - started

    assert outcomes == ["retrying", "succeeded"]
    assert elapsed < 2.5
    assert healthy.processed == [published.event_id]
    failed = WebhookAttempt.objects.exclude(delivery__endpoint=endpoint).get()
    assert failed.status_code is None
    assert failed.error.startswith("timeout")


@PRIVATE_OK
def test_an_unreachable_receiver_is_a_failed_try(transactional_db: None) -> None:
    webhook_endpoint_create(merchant_id=MERCHANT, url="http://127.0.0.1:9/hooks", events=["*"])
    (delivery,) = deliveries_for(event())

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == "retrying"
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.status_code, attempt.error != "") == (None, True)


# --- the retry schedule -----------------------------------------------------------------------


@override_settings(WEBHOOK_RETRY_BASE_SECONDS=30, WEBHOOK_RETRY_MAX_SECONDS=3600)
def test_the_backoff_ceiling_doubles_up_to_the_cap() -> None:
    ceilings = [webhook_backoff_ceiling(n) for n in range(1, 11)]
    assert ceilings == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert webhook_backoff_ceiling(10_000) == 3600


@override_settings(WEBHOOK_RETRY_BASE_SECONDS=30, WEBHOOK_RETRY_MAX_SECONDS=3600)
def test_the_backoff_is_fully_jittered_and_grows() -> None:
    rng = random.Random(5)
    samples = {n: [webhook_backoff_seconds(n, rng=rng) for _ in range(400)] for n in (1, 4, 9)}
    assert all(
        0 <= s <= webhook_backoff_ceiling(n) for n, values in samples.items() for s in values
    )
    assert len(set(samples[4])) == 400
    assert min(samples[4]) < 24 and max(samples[4]) > 216
    means = [sum(values) / len(values) for values in samples.values()]
    assert means == sorted(means)
    assert means[0] < 20 < 100 < means[1] < 160 < 1500 < means[2]


@PRIVATE_OK
@override_settings(WEBHOOK_RETRY_BASE_SECONDS=30, WEBHOOK_RETRY_MAX_SECONDS=3600)
def test_a_failed_try_is_scheduled_within_the_ceiling(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[500] * 10)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())
    clock = delivery.created_at
    waits = []
    for _ in range(6):
        webhook_delivery_attempt(delivery_id=delivery.pk, now=clock)
        next_at = WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at
        waits.append((next_at - clock).total_seconds())
        clock = next_at

    ceilings = [webhook_backoff_ceiling(n) for n in range(1, 7)]
    assert all(0 <= wait <= ceiling + 1 for wait, ceiling in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == 6
    assert len(receiver.requests) == 6


@PRIVATE_OK
@override_settings(WEBHOOK_RETRY_WINDOW_HOURS=24, WEBHOOK_RETRY_MAX_SECONDS=3600)
def test_a_delivery_is_given_up_only_after_the_retry_window(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(statuses=[500] * 3)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())
    window_end = delivery.created_at + timedelta(hours=24)

    early = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.created_at)
    late = webhook_delivery_attempt(delivery_id=delivery.pk, now=window_end - timedelta(minutes=1))
    stored_late = WebhookDelivery.objects.get(pk=delivery.pk)
    final_at = window_end + timedelta(hours=2)
    final = webhook_delivery_attempt(delivery_id=delivery.pk, now=final_at)
    afterwards = webhook_delivery_attempt(delivery_id=delivery.pk, now=final_at + timedelta(days=1))

    assert (early, late, final, afterwards) == ("retrying", "retrying", "failed", "skipped")
    assert stored_late.status == "pending"
    assert stored_late.next_attempt_at <= window_end
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.next_attempt_at, stored.attempts) == ("failed", None, 3)
    assert len(receiver.requests) == 3
    assert webhook_deliveries_due(now=final_at + timedelta(days=1)) == []


# --- leases, resend, sweep --------------------------------------------------------------------


def _in_thread(target: Callable[[], Any], results: list[Any]) -> threading.Thread:
    """Run ``target`` on a thread with its own database connection, closed afterwards."""

    def run() -> None:
        try:
            results.append(target())
        finally:
            connection.close()

    return threading.Thread(target=run)


@PRIVATE_OK
def test_two_concurrent_attempts_send_once(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(delay=0.5)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())
    barrier = threading.Barrier(2)
    outcomes: list[DeliveryOutcome] = []

    def attempt() -> DeliveryOutcome:
        barrier.wait()
        return webhook_delivery_attempt(delivery_id=delivery.pk)

    threads = [_in_thread(attempt, outcomes) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert len(receiver.requests) == 1
    assert WebhookAttempt.objects.filter(delivery=delivery).count() == 1
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 1


@PRIVATE_OK
def test_no_row_lock_is_held_during_the_http_call(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    release = threading.Event()
    receiver = receivers(hold=release)
    subscribe(receiver)
    (delivery,) = deliveries_for(event())
    outcomes: list[DeliveryOutcome] = []
    sender = _in_thread(lambda: webhook_delivery_attempt(delivery_id=delivery.pk), outcomes)
    sender.start()
    assert receiver.arrived.wait(10)

    with transaction.atomic():
        locked = WebhookDelivery.objects.select_for_update(nowait=True).get(pk=delivery.pk)
    due_while_sending = webhook_deliveries_due()
    release.set()
    sender.join(30)

    assert locked.leased_until is not None
    assert due_while_sending == []
    assert outcomes == ["succeeded"]


@PRIVATE_OK
def test_a_delivery_whose_worker_died_is_due_again_once_its_lease_ends(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    subscribe(receiver)
    (delivery,) = deliveries_for(event())
    now = delivery.created_at + timedelta(seconds=1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        leased_until=now + timedelta(seconds=60), lease_token="dead-worker", attempts=1
    )

    due_while_leased = webhook_deliveries_due(now=now)
    skipped = webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
    due_after = webhook_deliveries_due(now=now + timedelta(seconds=61))
    sent = webhook_delivery_attempt(delivery_id=delivery.pk, now=now + timedelta(seconds=61))

    assert (due_while_leased, skipped) == ([], "skipped")
    assert (due_after, sent) == ([delivery.pk], "succeeded")
    assert len(receiver.requests) == 1
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 2


@PRIVATE_OK
def test_attempts_refuse_to_run_inside_a_transaction(db: None) -> None:
    with pytest.raises(transaction.TransactionManagementError):
        webhook_delivery_attempt(delivery_id=1)


@PRIVATE_OK
def test_a_disabled_endpoint_fails_its_pending_deliveries_without_a_request(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    endpoint = subscribe(receiver)
    (delivery,) = deliveries_for(event())
    webhook_endpoint_disable(merchant_id=MERCHANT, livemode=False, endpoint_id=endpoint.id)

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == "failed"
    assert receiver.requests == []
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.last_error) == ("failed", "endpoint disabled")


@PRIVATE_OK
def test_resend_tries_a_succeeded_or_failed_delivery_again_now(
    transactional_db: None, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    subscribe(receiver)
    published = event()
    (delivery,) = deliveries_for(published)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    broker_messages()

    resent = webhook_delivery_resend(delivery_id=delivery.pk)
    enqueued = broker_messages()
    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)
    webhook_delivery_resend(delivery_id=delivery.pk)
    again = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert resent.status == "pending"
    assert enqueued == [("outbox.webhook_tasks.webhook_delivery_send", [delivery.pk])]
    assert (outcome, again) == ("succeeded", "succeeded")
    assert len(receiver.requests) == 3
    assert receiver.processed == [published.event_id]
    with pytest.raises(WebhookNotFound):
        webhook_delivery_resend(delivery_id=delivery.pk + 1000)


@PRIVATE_OK
def test_the_sweep_enqueues_every_due_delivery(transactional_db: None) -> None:
    webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    due, later = deliveries_for(event()), deliveries_for(event())
    WebhookDelivery.objects.filter(pk=later[0].pk).update(
        next_attempt_at=later[0].created_at + timedelta(hours=1)
    )
    broker_messages()

    count = webhook_deliveries_sweep.run()

    assert count == 1
    assert broker_messages() == [("outbox.webhook_tasks.webhook_delivery_send", [due[0].pk])]


# --- the staff admin ----------------------------------------------------------------------------


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw-12345678"))
    return client


@PRIVATE_OK
def test_the_admin_never_shows_an_endpoint_secret(staff: Client) -> None:
    endpoint, secret = webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    listing = staff.get("/admin/webhooks/webhookendpoint/")
    detail = staff.get(f"/admin/webhooks/webhookendpoint/{endpoint.id}/change/")
    assert listing.status_code == detail.status_code == 200
    assert endpoint.id in listing.content.decode()
    assert PUBLIC_URL in detail.content.decode()
    assert secret not in listing.content.decode() + detail.content.decode()


@PRIVATE_OK
def test_staff_see_attempts_and_resend_a_delivery(
    staff: Client, django_capture_on_commit_callbacks: Any
) -> None:
    webhook_endpoint_create(merchant_id=MERCHANT, url=PUBLIC_URL, events=["*"])
    webhook_deliveries_create([event()])
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)
    WebhookAttempt.objects.create(
        delivery=delivery, attempted_at=delivery.created_at, status_code=502, latency_ms=12
    )

    detail = staff.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/").content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        response = staff.post(
            "/admin/webhooks/webhookdelivery/",
            {"action": "resend", "_selected_action": [delivery.pk]},
        )

    assert "502" in detail
    assert response.status_code == 302
    assert len(callbacks) == 1
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.next_attempt_at is not None) == ("pending", True)


def test_staff_requeue_dead_outbox_messages(staff: Client) -> None:
    dead = OutboxMessage.objects.create(
        event_id="evt_dead",
        event_type="payment.captured",
        aggregate_type="payment",
        aggregate_id="pay_dead",
        sequence=1,
        merchant_id=MERCHANT,
        payload={},
        state=OutboxMessage.State.DEAD,
        attempts=15,
    )
    listing = staff.get("/admin/outbox/outboxmessage/?state__exact=dead")
    response = staff.post(
        "/admin/outbox/outboxmessage/", {"action": "requeue", "_selected_action": [dead.pk]}
    )
    assert "pay_dead" in listing.content.decode()
    assert response.status_code == 302
    assert OutboxMessage.objects.get(pk=dead.pk).state == "pending"
