"""Reads of merchant webhooks: a merchant's endpoints (scoped to that merchant), the deliveries
the sweep must send, and the deliveries of given events for staff."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from common.pagination import cursor_page

from .errors import WebhookNotFound
from .models import WebhookDelivery, WebhookEndpoint

SWEEP_BATCH = 500


def webhook_endpoint_get(*, merchant_id: str, livemode: bool, endpoint_id: str) -> WebhookEndpoint:
    """The merchant's endpoint of this mode; another merchant's id, or one of the other mode,
    raises ``WebhookNotFound`` like a missing one, so ids reveal nothing across merchants."""
    endpoint = WebhookEndpoint.objects.filter(
        merchant_id=merchant_id, livemode=livemode, pk=endpoint_id
    ).first()
    if endpoint is None:
        raise WebhookNotFound(f"no such webhook endpoint: {endpoint_id}")
    return endpoint


def webhook_endpoint_list(
    *,
    merchant_id: str,
    livemode: bool,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[WebhookEndpoint], bool]:
    """One page of the merchant's endpoints of this mode (disabled ones too), newest first, and
    whether more lie beyond it. Ids sort by creation time, so the cursor is the id, as for
    payments."""
    return cursor_page(
        WebhookEndpoint.objects.filter(merchant_id=merchant_id, livemode=livemode),
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
    )


def webhook_deliveries_due(*, now: datetime | None = None, limit: int = SWEEP_BATCH) -> list[int]:
    """Ids of pending deliveries whose next try is due and that no live lease holds, the
    longest-waiting first. A delivery whose worker died comes back here once its lease ends."""
    at = now if now is not None else timezone.now()
    return list(
        WebhookDelivery.objects.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lt=at),
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=at,
        )
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


def webhook_deliveries_of_events(*, event_ids: Iterable[str]) -> list[WebhookDelivery]:
    """The deliveries of these events, with their endpoints, oldest first (one query; the
    payment page of the back office)."""
    return list(
        WebhookDelivery.objects.filter(event_id__in=list(event_ids))
        .select_related("endpoint")
        .order_by("id")
    )
