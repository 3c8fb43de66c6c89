"""Read-only admin views of the sandbox gateway's ledger and request log."""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin
from gateways.models import SandboxLedgerEntry, SandboxRequest


@admin.register(SandboxLedgerEntry)
class SandboxLedgerEntryAdmin(ReadOnlyAdmin[SandboxLedgerEntry]):
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
class SandboxRequestAdmin(ReadOnlyAdmin[SandboxRequest]):
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
