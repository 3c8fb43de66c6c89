"""Editable admin for gateway configuration and merchant routing."""

from __future__ import annotations

from django.contrib import admin

from routing.models import GatewayConfig, MerchantRouting


@admin.register(GatewayConfig)
class GatewayConfigAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "adapter",
        "enabled",
        "priority",
        "currencies",
        "methods",
        "countries",
        "min_amount",
        "max_amount",
        "fee_fixed",
        "fee_bps",
    )
    list_editable = ("enabled", "priority")
    list_filter = ("enabled", "adapter")
    search_fields = ("name",)


@admin.register(MerchantRouting)
class MerchantRoutingAdmin(admin.ModelAdmin):
    list_display = ("merchant_id", "strategy", "updated_at")
    list_filter = ("strategy",)
    search_fields = ("merchant_id",)
