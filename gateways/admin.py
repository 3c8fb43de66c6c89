"""Read-only admin views of the sandbox gateway's ledger and request log."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from gateways.models import SandboxLedgerEntry, SandboxRequest


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may look, never add, change or delete: the sandbox alone writes these rows."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SandboxLedgerEntry)
class SandboxLedgerEntryAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "gateway",
        "operation",
        "reference",
        "order_reference",
        "gateway_reference",
        "amount",
        "currency",
        "token",
    )


@admin.register(SandboxRequest)
class SandboxRequestAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "gateway",
        "operation",
        "reference",
        "order_reference",
        "token",
        "outcome",
        "decline_code",
    )
