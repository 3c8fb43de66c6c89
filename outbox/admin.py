"""Staff views of the outbox and of merchant webhooks.

Rows are read-only: staff never edit events, payloads, endpoints or deliveries here. The two
actions (requeue dead outbox rows, resend deliveries) call services, need the model's
``change`` permission, and are written to the admin log.

The outbox list opens with the backlog (pending, dead-lettered, published in the last hour,
each a link to those rows), read by ``outbox.selectors.outbox_lag`` from the unpublished
rows' partial index, so dead-lettered messages are found in one click, not by paging.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.text import Truncator

from common.admin import ReadOnlyAdmin, format_duration
from outbox.selectors import outbox_lag

from .models import OutboxMessage, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .webhooks import webhook_delivery_resend


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin[OutboxMessage]):
    list_display = (
        "id",
        "event_type",
        "aggregate_id",
        "sequence",
        "state",
        "attempts",
        "next_attempt_at",
        "created_at",
        "published_at",
        "dead_at",
        "last_error_excerpt",
    )
    list_filter = ("state", "event_type")
    search_fields = ("=event_id", "=aggregate_id", "=merchant_id")
    show_full_result_count = False
    actions = ("requeue",)
    change_list_template = "admin/dashboard/outboxmessage_change_list.html"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        """The list, with the backlog counts above it (two indexed queries per page)."""
        lag = outbox_lag()
        context = {
            "outbox_counts": lag,
            "outbox_oldest_pending_age": (
                format_duration(lag.oldest_pending_age) if lag.oldest_pending_at else ""
            ),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    @admin.display(description="last error")
    def last_error_excerpt(self, obj: OutboxMessage) -> str:
        return Truncator(obj.last_error).chars(80)

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox.change_outboxmessage")

    @admin.action(description="Requeue the selected dead messages", permissions=["requeue"])
    def requeue(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        # Imported here: the relay module is written alongside this one.
        from .relay import outbox_messages_requeue

        ids = list(queryset.values_list("id", flat=True))
        moved = outbox_messages_requeue(ids=ids)
        for message in queryset.filter(pk__in=ids, state=OutboxMessage.State.PENDING):
            self.log_change(request, message, "requeued")
        self.message_user(request, f"{moved} message(s) requeued.", messages.SUCCESS)


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
        return request.user.has_perm("outbox.change_webhookdelivery")

    @admin.action(description="Resend the selected deliveries now", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        deliveries = list(queryset.order_by("id"))
        for delivery in deliveries:
            webhook_delivery_resend(delivery_id=delivery.pk)
            self.log_change(request, delivery, "resent")
        self.message_user(request, f"{len(deliveries)} delivery(ies) resent.", messages.SUCCESS)
