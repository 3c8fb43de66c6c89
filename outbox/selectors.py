"""Reads of webhook endpoints and deliveries. Endpoint reads are scoped to one merchant."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import WebhookDelivery, WebhookEndpoint
from .webhooks import WebhookNotFound

SWEEP_BATCH = 500


def webhook_endpoint_get(*, merchant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The merchant's endpoint; another merchant's id raises ``WebhookNotFound`` like a
    missing one, so ids reveal nothing across merchants."""
    endpoint = WebhookEndpoint.objects.filter(merchant_id=merchant_id, pk=endpoint_id).first()
    if endpoint is None:
        raise WebhookNotFound(f"no such webhook endpoint: {endpoint_id}")
    return endpoint


def webhook_endpoint_list(
    *,
    merchant_id: str,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[WebhookEndpoint], bool]:
    """One page of the merchant's endpoints (disabled ones too), newest first, and whether
    more lie beyond it. Ids sort by creation time, so the cursor is the id, as for payments."""
    qs: QuerySet[WebhookEndpoint] = WebhookEndpoint.objects.filter(merchant_id=merchant_id)
    if ending_before:
        rows = list(qs.filter(pk__gt=ending_before).order_by("pk")[: limit + 1])
        return list(reversed(rows[:limit])), len(rows) > limit
    if starting_after:
        qs = qs.filter(pk__lt=starting_after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    return rows[:limit], len(rows) > limit


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
