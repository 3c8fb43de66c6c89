"""Editable admin for gateway configuration and merchant routing.

The gateway list also shows each gateway's live state as every router sees it: breaker state,
success rate and latency (p50/p95) from the shared metrics in Redis. They are read once per
page for all rows together (``routing.live.gateways_live``: two Redis round trips, not
one per row), and a Redis outage shows as "unavailable" in those columns instead of an error
page, so the configuration stays editable while Redis is down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest
from django.utils.safestring import SafeString

from common.admin import UNAVAILABLE, breaker_badge, format_ms, format_rate
from routing.live import GatewayLive, gateways_live
from routing.models import GatewayConfig, MerchantRouting

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # a stub-only alias

# The attribute that carries a row's live state from the batched read to its columns.
_LIVE = "_live"


def _live(obj: GatewayConfig) -> GatewayLive | None:
    return getattr(obj, _LIVE, None)


@admin.register(GatewayConfig)
class GatewayConfigAdmin(admin.ModelAdmin[GatewayConfig]):
    list_display = (
        "name",
        "adapter",
        "enabled",
        "priority",
        "breaker",
        "success_rate",
        "latency",
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
    readonly_fields = ("live_state",)

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """The change list, with the live state of the page's gateways read in one batch and
        attached to the row objects the columns render."""
        changelist = super().get_changelist_instance(request)
        # Evaluates the page's queryset once; the rows, and the list_editable formset built
        # on the same queryset, reuse these very objects from its result cache.
        rows: list[GatewayConfig] = list(changelist.result_list)
        live = gateways_live(row.name for row in rows)
        if rows and not live.available:
            messages.warning(
                request, "Live gateway state is unavailable (Redis could not be read)."
            )
        for row in rows:
            setattr(row, _LIVE, live.gateways.get(row.name))
        return changelist

    @admin.display(description="breaker")
    def breaker(self, obj: GatewayConfig) -> SafeString:
        live = _live(obj)
        return breaker_badge(live.breaker_state if live else None)

    @admin.display(description="success rate")
    def success_rate(self, obj: GatewayConfig) -> str:
        live = _live(obj)
        if live is None:
            return UNAVAILABLE
        decided = live.approved + live.declined
        return f"{format_rate(live.success_rate)} ({live.approved}/{decided})"

    @admin.display(description="latency p50 / p95")
    def latency(self, obj: GatewayConfig) -> str:
        live = _live(obj)
        if live is None:
            return UNAVAILABLE
        return f"{format_ms(live.latency_p50_ms)} / {format_ms(live.latency_p95_ms)}"

    @admin.display(description="live state")
    def live_state(self, obj: GatewayConfig | None) -> str:
        """The same live figures on the edit page (one gateway, read when the page opens)."""
        if obj is None or obj.pk is None:
            return "—"
        live = gateways_live([obj.name]).gateways.get(obj.name)
        if live is None:
            return UNAVAILABLE
        return (
            f"breaker {live.breaker_state.replace('_', '-')}"
            f"{', bulkhead full' if live.bulkhead_full else ''}; "
            f"success rate {format_rate(live.success_rate)} "
            f"({live.approved} approved, {live.declined} declined, {live.errors} errors); "
            f"latency p50 {format_ms(live.latency_p50_ms)}, p95 {format_ms(live.latency_p95_ms)}"
        )

    def get_fields(self, request: HttpRequest, obj: GatewayConfig | None = None) -> _FieldGroups:
        """The model's fields, with the live state last and only on an existing gateway."""
        fields = [f for f in super().get_fields(request, obj) if f != "live_state"]
        return [*fields, "live_state"] if obj is not None else fields


@admin.register(MerchantRouting)
class MerchantRoutingAdmin(admin.ModelAdmin[MerchantRouting]):
    list_display = ("merchant_id", "strategy", "updated_at")
    list_filter = ("strategy",)
    search_fields = ("merchant_id",)
