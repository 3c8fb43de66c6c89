"""Merchant webhooks: endpoints, one delivery per (endpoint, event), and sending them.

``webhook_deliveries_create`` is the in-process outbox consumer ``webhooks``
(``outbox/consumers.py``): it reads the outbox itself, whether or not the event bus is up, and
gets each event once, in per-payment order, inside the transaction that marks it applied. Each
delivery is then sent by its own Celery task (``outbox/webhook_tasks.py``), so a slow or
failing receiver holds up nothing but its own delivery. Retries are driven by the beat sweep
(``webhook_deliveries_due``), whose period bounds how late a retry can start; nothing waits in
the broker for an hour-long countdown. Delivery is at least once: a receiver deduplicates by
the event id in the body.

A webhook URL must not become a way into AegisPay's own network. Unless
``WEBHOOK_ALLOW_PRIVATE_URLS`` (DEBUG, tests), URLs are https only, and a URL whose host resolves
to any non-public address is refused at creation and again before every send, because DNS can
change in between. The request then goes to the very address that was checked (the connection
is pinned to it, with the host name kept for the Host header and TLS), so a second, different
DNS answer cannot slip in. Redirects are never followed: a 3xx is a failed try.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, urlsplit

import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from common.backoff import backoff_ceiling, backoff_seconds
from common.errors import DomainError

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, new_webhook_secret
from .signing import HEADER, sign
from .types import OutboxEvent

logger = logging.getLogger(__name__)

# The name this module's outbox consumer is registered under (``OutboxConfig.ready``).
WEBHOOKS_CONSUMER = "webhooks"

# --- errors ---


class WebhookError(DomainError):
    """Base of the webhook errors. ``code`` is stable and machine-readable; the API answers
    a missing endpoint 404 and every other webhook error 400 (``payments/api_errors.py``)."""

    code = "webhook_error"


class WebhookUrlInvalid(WebhookError):
    code = "url_invalid"
    param = "url"


class WebhookUrlNotAllowed(WebhookError):
    code = "url_not_allowed"
    param = "url"


class WebhookEventsInvalid(WebhookError):
    code = "events_invalid"
    param = "events"


class WebhookNotFound(WebhookError):
    code = "resource_missing"
    status = 404
    param = "id"


# --- event patterns ---

_PAYMENT_STATUSES = (
    "initiated",
    "processing",
    "authorized",
    "captured",
    "completed",
    "refund_initiated",
    "partially_refunded",
    "refunded",
    "failed",
    "cancelled",
    "expired",
)
# Every event type payments emits (docs/API.md, "Events"). A new type must be added here before an
# endpoint can name it exactly; the wildcards match it at once.
EVENT_TYPES = frozenset(
    {f"payment.{status}" for status in _PAYMENT_STATUSES}
    | {
        "payment.attempt_failed",
        "payment.capture_requested",
        "payment.cancel_requested",
        "payment.voided",
        "refund.created",
        "refund.succeeded",
        "refund.failed",
    }
)
WILDCARDS = frozenset({"*", "payment.*", "refund.*"})
_MAX_PATTERNS = 50


def webhook_events_validate(events: object) -> list[str]:
    """The endpoint's patterns, deduplicated in their given order.

    Raises ``WebhookEventsInvalid`` unless ``events`` is a non-empty list of ``*``,
    ``payment.*``, ``refund.*`` or known event types: a misspelt type would otherwise match
    nothing, silently.
    """
    if not isinstance(events, list) or not events:
        raise WebhookEventsInvalid("events must be a non-empty list of event types or patterns")
    if len(events) > _MAX_PATTERNS:
        raise WebhookEventsInvalid(f"events may hold at most {_MAX_PATTERNS} entries")
    patterns: list[str] = []
    for pattern in events:
        if not isinstance(pattern, str) or (pattern not in WILDCARDS | EVENT_TYPES):
            raise WebhookEventsInvalid(
                f"unknown event type or pattern: {pattern!r}; use '*', 'payment.*', "
                "'refund.*' or an event type such as 'payment.captured'"
            )
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


def event_matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with ``patterns`` wants events of ``event_type``."""
    return any(
        pattern in ("*", event_type)
        or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in patterns
    )


# --- URLs ---

_MAX_URL_LENGTH = 2048
# NAT64 (RFC 6052) embeds an IPv4 address in the last 32 bits; the gateway would reach it.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really reaches (mapped, 6to4, Teredo, NAT64)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_is_public(address: IPAddress) -> bool:
    """True only for a globally routable unicast address.

    ``is_global`` alone lets multicast through, and an IPv4-mapped IPv6 address such as
    ``::ffff:127.0.0.1`` is judged by the IPv4 address it embeds.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_is_public(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one request goes: the checked address, and the name the receiver knows."""

    scheme: str
    host: str
    port: int
    path: str
    address: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _split(url: object) -> SplitResult:
    """Syntax and policy checks that need no DNS."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlInvalid("url is required and must be a string")
    if len(url) > _MAX_URL_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise WebhookUrlInvalid(
            f"url must be at most {_MAX_URL_LENGTH} printable characters without spaces"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise WebhookUrlInvalid("url is not a valid URL") from None
    if parts.scheme not in ("https", "http"):
        raise WebhookUrlInvalid("url must start with https://")
    if parts.scheme == "http" and not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        raise WebhookUrlNotAllowed("url must use https")
    if "@" in parts.netloc:
        raise WebhookUrlInvalid("url must not contain a user name or password")
    if not parts.hostname:
        raise WebhookUrlInvalid("url has no host")
    return parts


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to now (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlInvalid(f"the host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookUrlInvalid(f"the host {host!r} does not resolve")
    return addresses


def _check_public(addresses: Iterable[IPAddress]) -> None:
    """Refuse if *any* address is not public: a host that answers with a public and a private
    address must not reach the private one."""
    if settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        return
    for address in addresses:
        if not address_is_public(address):
            raise WebhookUrlNotAllowed(
                f"url must not point at a private or reserved address ({address})"
            )


def webhook_url_validate(url: object) -> str:
    """``url`` if an endpoint may use it.

    Raises ``WebhookUrlInvalid`` (syntax, scheme, credentials, unresolvable host) or
    ``WebhookUrlNotAllowed`` (http, or a host that resolves to any private, loopback,
    link-local, multicast, reserved or unspecified address, IPv4 or IPv6, mapped forms
    included). With ``WEBHOOK_ALLOW_PRIVATE_URLS`` (development) only the syntax is checked,
    so a host that does not resolve yet can be registered.
    """
    parts = _split(url)
    if not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        _check_public(_resolve(parts.hostname or "", _port(parts)))
    return parts.geturl()


def webhook_url_target(url: str) -> WebhookTarget:
    """Check ``url`` as ``webhook_url_validate`` does, at send time, and pick the address.

    The request must go to the returned ``address``: that is the one that was checked.
    """
    parts = _split(url)
    host = parts.hostname or ""
    port = _port(parts)
    addresses = _resolve(host, port)
    _check_public(addresses)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(
        scheme=parts.scheme, host=host, port=port, path=path, address=str(addresses[0])
    )


# --- endpoints ---


def webhook_endpoint_create(
    *, merchant_id: str, url: str, events: Sequence[str]
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
        merchant_id=merchant_id, url=checked_url, events=patterns, secret=secret
    )
    return endpoint, secret


def webhook_endpoint_disable(*, merchant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Disable the merchant's endpoint (idempotent) and return it.

    Locks the endpoint row for the update. Another merchant's endpoint raises
    ``WebhookNotFound`` like a missing one. New events create no deliveries for it, and its
    pending deliveries end as failed at their next try.
    """
    with transaction.atomic():
        endpoint = (
            WebhookEndpoint.objects.select_for_update()
            .filter(merchant_id=merchant_id, pk=endpoint_id)
            .first()
        )
        if endpoint is None:
            raise WebhookNotFound(f"no such webhook endpoint: {endpoint_id}")
        if endpoint.status != WebhookEndpoint.Status.DISABLED:
            endpoint.status = WebhookEndpoint.Status.DISABLED
            endpoint.disabled_at = timezone.now()
            endpoint.save(update_fields=["status", "disabled_at"])
    return endpoint


# --- deliveries ---


def _enqueue_after_commit(delivery_ids: list[int]) -> None:
    """Send one task per delivery once the current transaction commits.

    ``robust``: a broker that is down must not fail the relay's commit callbacks; the beat
    sweep sends whatever was not enqueued.
    """

    def send() -> None:
        from .webhook_tasks import webhook_delivery_send

        for delivery_id in delivery_ids:
            webhook_delivery_send.delay(delivery_id)

    transaction.on_commit(send, robust=True)


def webhook_deliveries_create(events: Sequence[OutboxEvent]) -> None:
    """Create one delivery per event and enabled endpoint of its merchant that wants it.

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
        if event_matches(endpoint.events, event.event_type)
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


class DeliveryOutcome(StrEnum):
    SKIPPED = "skipped"  # not due, leased by another worker, or already finished
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _HttpResult:
    status_code: int | None
    latency_ms: int
    error: str
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_EXCERPT_BYTES = 500
_ERROR_CHARS = 1000
# A lease outlives the request: urllib3 bounds connect + read by the timeout, but not the DNS
# lookup before it, which the margin covers.
_LEASE_MARGIN_SECONDS = 30.0


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and a receiver may answer anything."""
    return value.replace("\x00", "\ufffd")


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


def _post(target: WebhookTarget, body: bytes, headers: dict[str, str]) -> _HttpResult:
    """One POST to the checked address; never raises for what the receiver or network does."""
    timeout = urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            assert_hostname=target.host,
            server_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1
        )
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            excerpt = response.read(_EXCERPT_BYTES).decode("utf-8", "replace")
        finally:
            response.release_conn()
        status: int | None = response.status
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib3.exceptions.TimeoutError as exc:
        status, excerpt = None, ""
        error = f"timeout after {settings.WEBHOOK_TIMEOUT_SECONDS}s: {exc}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        status, excerpt = None, ""
        error = f"{type(exc).__name__}: {exc}"
    finally:
        pool.close()
    latency_ms = round((time.monotonic() - started) * 1000)
    return _HttpResult(status, latency_ms, _text(error)[:_ERROR_CHARS], _text(excerpt))


def _send(delivery: WebhookDelivery) -> _HttpResult:
    """Re-check the URL (DNS may have changed), sign the body and POST it."""
    endpoint = delivery.endpoint
    started = time.monotonic()
    try:
        target = webhook_url_target(endpoint.url)
    except WebhookError as exc:
        latency_ms = round((time.monotonic() - started) * 1000)
        return _HttpResult(None, latency_ms, f"{exc.code}: {exc.message}"[:_ERROR_CHARS], "")
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "AegisPay-Webhooks/1",
        "Accept-Encoding": "identity",
        # Signed with the real clock: the receiver compares it with its own.
        HEADER: sign(endpoint.secret, body, int(time.time())),
    }
    return _post(target, body, headers)


def _record(
    delivery: WebhookDelivery, token: str, attempted_at: datetime, result: _HttpResult
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
    result = _send(delivery)
    return _record(delivery, token, attempted_at, result)
