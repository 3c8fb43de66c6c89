"""A read-only view of payments for staff. Staff never edit status, amounts or events here;
actions that change a payment come with the back-office issue and go through services."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from aegispay.admin import ReadOnlyAdmin

from .models import Merchant, Payment, PaymentAttempt, PaymentEvent, Refund


class EventInline(admin.TabularInline):
    model = PaymentEvent
    fields = ("sequence", "type", "from_status", "to_status", "actor", "created_at", "data")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("sequence",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AttemptInline(admin.TabularInline):
    model = PaymentAttempt
    fields = (
        "number",
        "operation",
        "gateway",
        "status",
        "error_code",
        "latency_ms",
        "routing_decision",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "amount", "currency", "merchant", "gateway", "created_at")
    list_filter = ("status", "currency", "gateway")
    list_select_related = ("merchant",)
    search_fields = ("=id", "=merchant_reference", "=gateway_reference")
    show_full_result_count = False
    inlines = (AttemptInline, EventInline)


@admin.register(Merchant)
class MerchantAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "created_at")
    search_fields = ("=id", "name")


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "payment", "amount", "currency", "status", "created_at")
    list_filter = ("status",)
