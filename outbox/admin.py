"""Staff views of the outbox (merchant webhooks have theirs in ``webhooks/admin.py``).

Rows are read-only: staff never edit events or payloads here. The one action (requeue dead
rows) calls a service, needs the model's ``change`` permission, and is written to the admin
log.

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

from .models import OutboxMessage


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
