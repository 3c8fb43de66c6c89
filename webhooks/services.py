"""Merchant webhooks: endpoints, one delivery per (endpoint, event), and sending them.

``webhook_deliveries_create`` is the in-process outbox consumer ``webhooks``
(``outbox/consumers.py``, registered by ``WebhooksConfig.ready``): it reads the outbox itself,
whether or not the event bus is up, and gets each event once, in per-payment order, inside the
transaction that marks it applied. Each delivery is then sent by its own Celery task
(``webhooks/tasks.py``), so a slow or failing receiver holds up nothing but its own delivery.
Retries are driven by the beat sweep (``webhook_deliveries_due``), whose period bounds how late
a retry can start; nothing waits in the broker for an hour-long countdown. Delivery is at least
once: a receiver deduplicates by the event id in the body.

The URL is checked at creation and again before every send (``url_guard.py``); the request
itself is made and signed by ``transport.py``.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from common.backoff import backoff_ceiling, backoff_seconds
from outbox.types import OutboxEvent

from .errors import WebhookNotFound
from .events import event_matches, webhook_events_validate
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_webhook_secret
from .transport import HttpResult, webhook_send
from .url_guard import webhook_url_validate

logger = logging.getLogger(__name__)

# The name this app's outbox consumer is registered under (``WebhooksConfig.ready``). Stored in
# every ``OutboxConsumerMark`` row: it must not change.
WEBHOOKS_CONSUMER = "webhooks"

# --- endpoints ---


def webhook_endpoint_create(
    *, merchant_id: str, url: str, events: Sequence[str], livemode: bool = False
) -> tuple[WebhookEndpoint, str]:
    """Create an enabled endpoint and return it with its signing secret.

    The secret is returned here once; the API never shows it again. Raises
    ``WebhookUrlInvalid``, ``WebhookUrlNotAllowed`` or ``WebhookEventsInvalid`` and then
    writes nothing. Resolves the URL's host (DNS) unless private URLs are allowed.
    """
    checked_url = webhook_url_validate(url)
    patterns = webhook_events_validate(events)
    secret = new_webhook_secret()
    endpoint = WebhookEndpoint.objects.create(
        merchant_id=merchant_id, url=checked_url, events=patterns, secret=secret, livemode=livemode
    )
    return endpoint, secret


def _endpoint_locked(merchant_id: str, livemode: bool, endpoint_id: str) -> WebhookEndpoint:
    """The merchant's endpoint of this mode, its row locked for an update (inside a
    transaction); another merchant's endpoint, or the other mode's, raises ``WebhookNotFound``
    like a missing one."""
    endpoint = (
        WebhookEndpoint.objects.select_for_update()
        .filter(merchant_id=merchant_id, livemode=livemode, pk=endpoint_id)
        .first()
    )
    if endpoint is None:
        raise WebhookNotFound(f"no such webhook endpoint: {endpoint_id}")
    return endpoint


def webhook_endpoint_disable(
    *, merchant_id: str, livemode: bool, endpoint_id: str
) -> WebhookEndpoint:
    """Disable the merchant's endpoint (idempotent) and return it.

    Locks the endpoint row for the update. Another merchant's endpoint raises
    ``WebhookNotFound`` like a missing one. New events create no deliveries for it, and its
    pending deliveries end as failed at their next try.
    """
    with transaction.atomic():
        endpoint = _endpoint_locked(merchant_id, livemode, endpoint_id)
        if endpoint.status != WebhookEndpoint.Status.DISABLED:
            endpoint.status = WebhookEndpoint.Status.DISABLED
            endpoint.disabled_at = timezone.now()
            endpoint.save(update_fields=["status", "disabled_at"])
    return endpoint


def webhook_endpoint_rotate_secret(
    *, merchant_id: str, livemode: bool, endpoint_id: str, overlap_seconds: int
) -> tuple[WebhookEndpoint, str]:
    """Give the merchant's endpoint a new secret and return it with the secret, shown once.

    The old secret goes on signing beside the new one for ``overlap_seconds`` (0: it stops at
    once), so the merchant can move their receiver to the new secret with no delivery refused.
    Rotating again within an overlap ends the older overlap: only the last two secrets sign.
    Locks the endpoint row; another merchant's endpoint raises ``WebhookNotFound``.
    """
    with transaction.atomic():
        endpoint = _endpoint_locked(merchant_id, livemode, endpoint_id)
        secret = new_webhook_secret()
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = timezone.now() + timedelta(seconds=overlap_seconds)
        endpoint.secret = secret
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return endpoint, secret


# --- deliveries ---


def _enqueue_after_commit(delivery_ids: list[int]) -> None:
    """Send one task per delivery once the current transaction commits.

    ``robust``: a broker that is down must not fail the relay's commit callbacks; the beat
    sweep sends whatever was not enqueued.
    """

    def send() -> None:
        from .tasks import webhook_delivery_send

        for delivery_id in delivery_ids:
            webhook_delivery_send.delay(delivery_id)

    transaction.on_commit(send, robust=True)


def webhook_deliveries_create(events: Sequence[OutboxEvent]) -> None:
    """Create one delivery per event and enabled endpoint of its merchant and mode (the
    event's ``livemode``: a test endpoint never hears of a live payment) that wants it.

    The outbox consumer ``webhooks``: the consumer pass calls it inside its transaction, so the
    deliveries commit with the consumer's "applied" marks. Rows are inserted with ON CONFLICT DO
    NOTHING on (endpoint, event), so handing over the same events again creates nothing new.
    The send tasks are enqueued after commit, for the new deliveries only, in event order.
    """
    if not events:
        return
    endpoints: dict[str, list[WebhookEndpoint]] = defaultdict(list)
    for endpoint in WebhookEndpoint.objects.filter(
        merchant_id__in={event.merchant_id for event in events},
        status=WebhookEndpoint.Status.ENABLED,
    ).order_by("id"):
        endpoints[endpoint.merchant_id].append(endpoint)
    now = timezone.now()
    rows = [
        WebhookDelivery(
            endpoint=endpoint,
            event_id=event.event_id,
            event_type=event.event_type,
            aggregate_id=event.aggregate_id,
            payload=event.payload,
            next_attempt_at=now,
        )
        for event in events
        for endpoint in endpoints[event.merchant_id]
        if endpoint.livemode == bool(event.payload.get("livemode", False))
        and event_matches(endpoint.events, event.event_type)
    ]
    if not rows:
        return
    existing = set(
        WebhookDelivery.objects.filter(
            event_id__in={row.event_id for row in rows},
            endpoint_id__in={row.endpoint_id for row in rows},
        ).values_list("endpoint_id", "event_id")
    )
    fresh = [row for row in rows if (row.endpoint_id, row.event_id) not in existing]
    if not fresh:
        return
    WebhookDelivery.objects.bulk_create(fresh, ignore_conflicts=True)
    # ignore_conflicts returns no ids: read back the rows of the pairs that were new above.
    # (A pass racing on the same event, which SKIP LOCKED prevents, could enqueue a delivery
    # twice; the lease still sends it once.)
    wanted = {(row.endpoint_id, row.event_id) for row in fresh}
    new_ids = [
        pk
        for pk, endpoint_id, event_id in WebhookDelivery.objects.filter(
            event_id__in={row.event_id for row in fresh},
            endpoint_id__in={row.endpoint_id for row in fresh},
        )
        .order_by("id")
        .values_list("id", "endpoint_id", "event_id")
        if (endpoint_id, event_id) in wanted
    ]
    _enqueue_after_commit(new_ids)


def webhook_delivery_resend(*, delivery_id: int) -> WebhookDelivery:
    """Make the delivery due now, whatever its status, and enqueue its send after commit.

    For staff. Locks the delivery row briefly. A lease held by a send in flight is dropped:
    that send's outcome is still recorded as an attempt but no longer decides the delivery.
    A resent delivery past its retry window gets this one try. Raises ``WebhookNotFound``.
    """
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            raise WebhookNotFound(f"no such webhook delivery: {delivery_id}")
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.next_attempt_at = timezone.now()
        delivery.leased_until = None
        delivery.lease_token = ""
        delivery.save(update_fields=["status", "next_attempt_at", "leased_until", "lease_token"])
        _enqueue_after_commit([delivery.pk])
    return delivery


def webhook_backoff_ceiling(attempts: int) -> float:
    """The longest wait after the ``attempts``-th failed try: base * 2**(attempts-1), capped."""
    return backoff_ceiling(
        attempts, base=settings.WEBHOOK_RETRY_BASE_SECONDS, cap=settings.WEBHOOK_RETRY_MAX_SECONDS
    )


def webhook_backoff_seconds(attempts: int, *, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, ceiling], so receivers that failed together do not all
    come back at the same moment."""
    return backoff_seconds(
        attempts,
        base=settings.WEBHOOK_RETRY_BASE_SECONDS,
        cap=settings.WEBHOOK_RETRY_MAX_SECONDS,
        rng=rng,
    )


# --- sending ---


class DeliveryOutcome(StrEnum):
    SKIPPED = "skipped"  # not due, leased by another worker, or already finished
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


# A lease outlives the request: urllib3 bounds connect + read by the timeout, but not the DNS
# lookup before it, which the margin covers.
_LEASE_MARGIN_SECONDS = 30.0


def _lease_seconds() -> float:
    timeout: float = settings.WEBHOOK_TIMEOUT_SECONDS
    return 2 * timeout + _LEASE_MARGIN_SECONDS


def _claim(delivery_id: int, now: datetime) -> str | None:
    """Take the delivery for one try with a single conditional UPDATE; its token or None.

    PostgreSQL re-checks the WHERE clause of a concurrent UPDATE after the first commits, so
    exactly one of two racing workers gets the row; no lock outlives this statement.
    """
    token = secrets.token_hex(16)
    claimed = WebhookDelivery.objects.filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now),
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        next_attempt_at__lte=now,
    ).update(
        leased_until=now + timedelta(seconds=_lease_seconds()),
        lease_token=token,
        attempts=F("attempts") + 1,
    )
    return token if claimed else None


def _record(
    delivery: WebhookDelivery, token: str, attempted_at: datetime, result: HttpResult
) -> DeliveryOutcome:
    """Store the attempt and decide the delivery, in one short transaction.

    The delivery row changes only while this worker still holds the lease (same token), so a
    worker that lost its lease cannot overwrite a newer outcome.
    """
    finished = attempted_at + timedelta(milliseconds=result.latency_ms)
    window_end = delivery.created_at + timedelta(hours=settings.WEBHOOK_RETRY_WINDOW_HOURS)
    changes: dict[str, Any] = {
        "leased_until": None,
        "lease_token": "",
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if result.ok:
        outcome = DeliveryOutcome.SUCCEEDED
        changes |= {"status": WebhookDelivery.Status.SUCCEEDED, "delivered_at": finished}
        changes["next_attempt_at"] = None
    elif finished >= window_end:
        outcome = DeliveryOutcome.FAILED
        changes |= {"status": WebhookDelivery.Status.FAILED, "next_attempt_at": None}
    else:
        outcome = DeliveryOutcome.RETRYING
        delay = webhook_backoff_seconds(delivery.attempts)
        changes["next_attempt_at"] = finished + timedelta(seconds=delay)
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            attempted_at=attempted_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            response_excerpt=result.excerpt,
        )
        updated = WebhookDelivery.objects.filter(pk=delivery.pk, lease_token=token).update(
            **changes
        )
    if not updated:
        logger.warning("webhook delivery %s: lease lost, outcome not applied", delivery.pk)
    return outcome


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> DeliveryOutcome:
    """Try the delivery once if it is due and nobody else holds it; return what happened.

    Claims the delivery with an atomic lease (a conditional UPDATE, no row lock during the
    HTTP call, which is why this refuses to run inside a transaction), re-checks the URL,
    POSTs the signed event with ``WEBHOOK_TIMEOUT_SECONDS``, and records a ``WebhookAttempt``.
    Any 2xx succeeds. Anything else schedules the next try with exponential backoff and full
    jitter, until a failure comes ``WEBHOOK_RETRY_WINDOW_HOURS`` after the delivery was created:
    then the delivery is failed. A disabled endpoint fails its delivery without a request.
    Never raises for what the receiver does; ``now`` exists for tests of the schedule.
    """
    if transaction.get_connection().in_atomic_block:
        raise transaction.TransactionManagementError(
            "webhook deliveries are sent outside transactions: no lock may span the HTTP call"
        )
    attempted_at = now if now is not None else timezone.now()
    token = _claim(delivery_id, attempted_at)
    if token is None:
        return DeliveryOutcome.SKIPPED
    delivery = WebhookDelivery.objects.select_related("endpoint").get(pk=delivery_id)
    if delivery.endpoint.status != WebhookEndpoint.Status.ENABLED:
        WebhookDelivery.objects.filter(pk=delivery_id, lease_token=token).update(
            status=WebhookDelivery.Status.FAILED,
            next_attempt_at=None,
            leased_until=None,
            lease_token="",
            last_error="endpoint disabled",
        )
        return DeliveryOutcome.FAILED
    endpoint = delivery.endpoint
    result = webhook_send(
        url=endpoint.url,
        secrets=endpoint.signing_secrets(timezone.now()),
        message_id=delivery.event_id,
        payload=delivery.payload,
    )
    return _record(delivery, token, attempted_at, result)
