"""Staff views of merchant webhooks: endpoints, deliveries with their attempts, and the
deliveries of a payment's events on the payment's page.

Rows are read-only: staff never edit endpoints or deliveries here. The one action (resend
deliveries) calls a service, needs the delivery's ``change`` permission, and is written to the
admin log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from payments.admin import register_payment_page_section

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .selectors import webhook_deliveries_of_events
from .services import webhook_delivery_resend


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin[WebhookEndpoint]):
    # The signing secret is never shown: it is not in any list of fields.
    fields = ("id", "merchant_id", "url", "events", "status", "created_at", "disabled_at")
    readonly_fields = fields
    list_display = ("id", "merchant_id", "url", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("=id", "=merchant_id")


class WebhookAttemptInline(admin.TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    fields = ("attempted_at", "status_code", "latency_ms", "error", "response_excerpt")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-attempted_at", "-id")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin[WebhookDelivery]):
    fields = (
        "endpoint",
        "event_id",
        "event_type",
        "aggregate_id",
        "status",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "payload",
    )
    readonly_fields = fields
    list_display = (
        "id",
        "event_type",
        "event_id",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event_type")
    list_select_related = ("endpoint",)
    search_fields = ("=event_id", "=aggregate_id", "=endpoint__id", "=endpoint__merchant_id")
    show_full_result_count = False
    inlines = (WebhookAttemptInline,)
    actions = ("resend",)

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("webhooks.change_webhookdelivery")

    @admin.action(description="Resend the selected deliveries now", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        deliveries = list(queryset.order_by("id"))
        for delivery in deliveries:
            webhook_delivery_resend(delivery_id=delivery.pk)
            self.log_change(request, delivery, "resent")
        self.message_user(request, f"{len(deliveries)} delivery(ies) resent.", messages.SUCCESS)


def _payment_page_deliveries(event_ids: Sequence[str]) -> dict[str, Any]:
    return {"deliveries": webhook_deliveries_of_events(event_ids=event_ids)}


register_payment_page_section(_payment_page_deliveries)
