"""The payments part of the back office: find a payment, see everything that happened to it,
and act on it through the same services as the API.

Staff never edit a payment's fields, events, attempts or refunds here (the model admins are
read-only). The actions (retry, refund, capture, cancel) are pages of their own under the
payment's URL: GET shows a confirmation form, a CSRF-protected POST calls the service with
``staff:<username>`` as the actor. Each needs its own permission (``payments.retry_payment``
and so on), which the ``operators`` group has and ``viewers`` lack.

The list must stay fast with millions of rows: filters and the search are exact lookups on
indexed columns, nothing counts the whole table (``LookaheadPaginator`` fetches one row past
the page instead of counting), the merchant and currency filters take a typed value rather
than listing every merchant, and facets (per-choice counts) are off.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import ShowFacets
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection, models
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT
from django.db.models.functions import Lower
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from routing.models import GatewayConfig

from .admin_forms import ACTIONS, PaymentAction, format_amount, staff_actor
from .errors import AmountExceeded, PaymentError, ValidationFailed, VersionConflict
from .merchants import api_key_create, api_key_revoke, api_key_roll, api_key_scopes_validate
from .models import (
    ApiKey,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    Refund,
    RiskRules,
)
from .scopes import SCOPES
from .selectors import unresolved_payment_ids

if TYPE_CHECKING:
    # A stub-only type: what SimpleListFilter.choices yields.
    from django.contrib.admin.filters import _ListFilterChoices

    class _InputFilterChoice(_ListFilterChoices):
        """The one choice of an ``ExactInputFilter``, with what its template needs."""

        value: str
        parameter_name: str
        placeholder: str
        slug: str
        keep: list[tuple[str, str]]

# --- the list: pagination without COUNT(*) ---


class LookaheadPaginator(Paginator):
    """A paginator that never counts the table.

    It reads at most one row past the requested page (``LIMIT per_page + 1`` at the page's
    offset, primary keys only), so it knows whether a next page exists but not how many pages
    there are: ``count`` is a lower bound, exact on the last page. The admin's pagination
    template for payments shows only previous, current and next.
    """

    object_list: QuerySet[Any]  # what the admin's changelist passes: a queryset, not any list

    def __init__(self, object_list: QuerySet[Any], per_page: int, *, page_number: int) -> None:
        super().__init__(object_list, per_page)
        self.page_number = page_number

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        seen = self.object_list.values_list("pk", flat=True)[offset : offset + self.per_page + 1]
        return offset + len(seen)


class PaymentChangeList(ChangeList):
    """The list with previous/next paging instead of numbered pages (no total is known)."""

    @property
    def has_previous_page(self) -> bool:
        return self.page_num > 1

    @property
    def has_next_page(self) -> bool:
        return self.result_count > self.page_num * self.list_per_page

    @property
    def previous_page_query(self) -> str:
        return self.get_query_string({PAGE_VAR: self.page_num - 1})

    @property
    def next_page_query(self) -> str:
        return self.get_query_string({PAGE_VAR: self.page_num + 1})

    @cached_property
    def estimated_total(self) -> str:
        """About how many payments exist in all, from the planner's statistics ("" if unknown)."""
        rows = estimated_table_rows(self.model)
        return "" if rows is None else f"{rows:,}"


def estimated_table_rows(model: type[models.Model]) -> int | None:
    """PostgreSQL's own estimate of a table's rows (``pg_class.reltuples``, kept by ANALYZE and
    autovacuum): free to read, unlike ``COUNT(*)``. ``None`` before the first ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return row[0] if row and row[0] >= 0 else None


# --- the list: filters ---


class ExactInputFilter(admin.SimpleListFilter):
    """A filter that takes a typed value instead of listing every choice.

    With many merchants a list of links would be huge and cost a query over all of them; a
    text box costs nothing and filters by an exact, indexed value.
    """

    template = "admin/payments/input_filter.html"
    parameter_name: str  # set by every subclass (SimpleListFilter refuses one without)
    placeholder = ""
    # The HTML id of the filter's form is ``filter-<slug>``.
    slug = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> Sequence[Any]:
        # Not shown; the filter only needs one so that the admin renders it.
        return (("", ""),)

    def normalized(self) -> str:
        return (self.value() or "").strip()

    def choices(self, changelist: ChangeList) -> Iterator[_InputFilterChoice]:
        keep = [
            (name, value)
            for name, value in changelist.params.items()
            if name not in (self.parameter_name, PAGE_VAR)
        ]
        yield {
            "selected": not self.normalized(),
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
            "value": self.normalized(),
            "parameter_name": self.parameter_name,
            "placeholder": self.placeholder,
            "slug": self.slug,
            "keep": keep,
        }


class MerchantFilter(ExactInputFilter):
    title = "merchant id"
    # The names Django's own field filters would use, so links and bookmarks read the same.
    parameter_name = "merchant__id__exact"
    placeholder = "mer_…"
    slug = "merchant"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Payment]) -> QuerySet[Payment]:
        value = self.normalized()
        return queryset.filter(merchant_id=value) if value else queryset


class CurrencyFilter(ExactInputFilter):
    title = "currency"
    parameter_name = "currency__exact"
    placeholder = "USD"
    slug = "currency"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Payment]) -> QuerySet[Payment]:
        value = self.normalized().upper()
        return queryset.filter(currency=value) if value else queryset


class AttentionFilter(admin.SimpleListFilter):
    """Payments with a gateway operation still unanswered past ``UNRESOLVED_ATTENTION_SECONDS``
    (``unresolved_payment_ids`` in payments/selectors.py; the operations are the gateway-call
    path's, payments/gateway.py): operations staff look into these; the system never guesses
    them."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("unresolved", "gateway outcome unknown")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Payment]) -> QuerySet[Payment]:
        if self.value() != "unresolved":
            return queryset
        return queryset.filter(pk__in=unresolved_payment_ids().values("pk"))


class GatewayFilter(admin.SimpleListFilter):
    """The configured gateway accounts (a small table), not ``SELECT DISTINCT`` over payments."""

    title = "gateway"
    parameter_name = "gateway__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> Sequence[Any]:
        names = GatewayConfig.objects.order_by("name").values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Payment]) -> QuerySet[Payment]:
        value = self.value()
        return queryset.filter(gateway=value) if value else queryset


# --- the detail page: read-only inlines are replaced by the tables of the change form ---


# What apps above payments add to a payment's page from its events' ids (webhooks: the
# deliveries of those events, ``webhooks/admin.py``), so that payments imports none of them.
PaymentPageSection = Callable[[Sequence[str]], dict[str, Any]]
_payment_page_sections: list[PaymentPageSection] = []


def register_payment_page_section(section: PaymentPageSection) -> None:
    """Add ``section(event_ids)``'s context to every payment page (idempotent per function)."""
    if section not in _payment_page_sections:
        _payment_page_sections.append(section)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "amount_display",
        "merchant_name",
        "gateway",
        "merchant_reference",
        "created_at",
    )
    list_filter = (
        "status",
        AttentionFilter,
        MerchantFilter,
        GatewayFilter,
        CurrencyFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("merchant",)
    # Newest first by creation time (then id, which the admin adds): every filter column leads
    # an index on (column, created_at), and a date filter is a range of the created_at index.
    # Sorting by any other column would sort the whole (filtered) table on every page.
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    list_per_page = 50
    # Never more than a page at once: "show all" of a million rows would be the whole table.
    list_max_show_all = 50
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    # The search box needs a search field; get_search_results decides what is searched.
    search_fields = ("=id",)
    search_help_text = (
        "Exact match: payment id, merchant reference, gateway reference or customer e-mail."
    )
    actions = None
    change_form_template = "admin/payments/payment/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "status",
                    "version",
                    "merchant",
                    "amount_display",
                    "authorized_display",
                    "captured_display",
                    "refunded_display",
                    "capture_method",
                    "authorization_expires_at",
                )
            },
        ),
        (
            "Gateway",
            {"fields": ("gateway", "gateway_reference", "failure_code", "failure_message")},
        ),
        (
            "Merchant's data",
            {
                "fields": (
                    "merchant_reference",
                    "description",
                    "customer",
                    "payment_method",
                    "metadata",
                )
            },
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    # --- list columns ---

    @admin.display(description="amount")
    def amount_display(self, payment: Payment) -> str:
        return format_amount(payment.amount, payment.currency)

    @admin.display(description="authorized")
    def authorized_display(self, payment: Payment) -> str:
        return format_amount(payment.amount_authorized, payment.currency)

    @admin.display(description="captured")
    def captured_display(self, payment: Payment) -> str:
        return format_amount(payment.amount_captured, payment.currency)

    @admin.display(description="refunded")
    def refunded_display(self, payment: Payment) -> str:
        return format_amount(payment.amount_refunded, payment.currency)

    @admin.display(description="merchant")
    def merchant_name(self, payment: Payment) -> str:
        return format_html(
            '{} <span class="quiet">{}</span>', payment.merchant.name, payment.merchant_id
        )

    # --- list: search and pagination ---

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Payment], search_term: str
    ) -> tuple[QuerySet[Payment], bool]:
        """Exact matches only, each served by an index (an OR of index scans): the payment id,
        the merchant's reference, the gateway's reference, or the customer's e-mail (lower-cased
        both sides, as ``payment_customer_email_idx`` is). A substring search would scan the
        table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(pk=term) | Q(merchant_reference=term) | Q(gateway_reference=term)
        if "@" in term:
            queryset = queryset.alias(customer_email=Lower(KT("customer__email")))
            match |= Q(customer_email=term.lower())
        return queryset.filter(match), False

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Payment],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> LookaheadPaginator:
        try:
            page_number = max(int(request.GET.get(PAGE_VAR, 1)), 1)
        except ValueError:
            page_number = 1
        return LookaheadPaginator(queryset, per_page, page_number=page_number)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PaymentChangeList

    # --- detail ---

    def get_queryset(self, request: HttpRequest) -> QuerySet[Payment]:
        return super().get_queryset(request).select_related("merchant")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Admin URLs carry the primary key quoted ("pay_x" is "pay_5Fx"); the admin unquotes it.
        payment = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if payment is not None:
            context.update(self.detail_context(request, payment))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def detail_context(self, request: HttpRequest, payment: Payment) -> dict[str, Any]:
        """Everything the payment page shows below its fields, in four queries (the fourth, the
        webhook deliveries of its events, is the section ``webhooks/admin.py`` registers)."""
        events = list(PaymentEvent.objects.filter(payment=payment).order_by("sequence"))
        event_ids = [event.id for event in events]
        context: dict[str, Any] = {"deliveries": []}
        for section in _payment_page_sections:
            context |= section(event_ids)
        return context | {
            "payment": payment,
            "timeline": [(event, _json(event.data)) for event in events],
            "attempts": [
                (
                    attempt,
                    _json(attempt.routing_decision),
                    format_amount(attempt.amount, attempt.currency),
                )
                for attempt in PaymentAttempt.objects.filter(payment=payment).order_by("number")
            ],
            "refunds": [
                (refund, format_amount(refund.amount, refund.currency))
                for refund in Refund.objects.filter(payment=payment).order_by("id")
            ],
            "payment_actions": [
                (action, self.action_url(payment, action))
                for action in ACTIONS.values()
                if payment.status in action.offered_in and request.user.has_perm(action.permission)
            ],
        }

    # --- actions ---

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        own = [
            path(
                f"<str:object_id>/{name}/",
                self.admin_site.admin_view(self.action_view),
                kwargs={"action_name": name},
                name=f"{opts.app_label}_{opts.model_name}_{name}",
            )
            for name in ACTIONS
        ]
        return own + super().get_urls()

    def action_url(self, payment: Payment, action: PaymentAction) -> str:
        opts = self.opts
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_{action.name}",
            kwargs={"object_id": quote(payment.pk)},
            current_app=self.admin_site.name,
        )

    def change_url(self, payment: Payment) -> str:
        opts = self.opts
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change",
            args=[quote(payment.pk)],
            current_app=self.admin_site.name,
        )

    def action_view(self, request: HttpRequest, object_id: str, action_name: str) -> HttpResponse:
        """GET: the confirmation page (writes nothing). POST: run the action through its service.

        ``admin_site.admin_view`` wraps it: staff login required and CSRF checked on POST.

        403 without the action's permission. A refusal by the service (state machine, amount,
        version, an operation in flight) writes nothing and is shown as an error message on
        the payment page; invalid input re-renders the form with its errors.
        """
        action = ACTIONS[action_name]
        if not request.user.has_perm(action.permission):
            raise PermissionDenied
        payment = self.get_queryset(request).filter(pk=unquote(object_id)).first()
        if payment is None:
            raise Http404(f"no payment {object_id}")
        if request.method == "POST":
            form = action.form_class(request.POST, currency=payment.currency)
            if form.is_valid():
                try:
                    message = form.submit(payment_id=payment.pk, actor=staff_actor(request.user))
                except VersionConflict:
                    self.message_user(
                        request,
                        f"Payment {payment.pk} changed since you looked (you confirmed version "
                        f"{form.cleaned_data['version']}, it is now at version "
                        f"{Payment.objects.values_list('version', flat=True).get(pk=payment.pk)}). "
                        "Nothing was done; review it and try again.",
                        messages.ERROR,
                    )
                except PaymentError as error:
                    unit = (
                        f" (amounts in this message are minor units of {payment.currency})"
                        if isinstance(error, AmountExceeded)
                        else ""
                    )
                    self.message_user(
                        request,
                        f"{action.button} refused: {error.message}{unit}. Nothing was done.",
                        messages.ERROR,
                    )
                else:
                    # The event is the record; the admin log adds it to the page's History.
                    self.log_change(request, payment, message)
                    self.message_user(request, message, messages.SUCCESS)
                return HttpResponseRedirect(self.change_url(payment))
        elif request.method == "GET":
            form = action.form_class(
                initial={"version": payment.version}, currency=payment.currency
            )
        else:
            return HttpResponse(status=405, headers={"Allow": "GET, POST"})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{action.button}: {payment.pk}",
            "subtitle": payment.pk,
            "payment": payment,
            "action": action,
            "form": form,
            "amounts": {
                "amount": format_amount(payment.amount, payment.currency),
                "authorized": format_amount(payment.amount_authorized, payment.currency),
                "captured": format_amount(payment.amount_captured, payment.currency),
                "refunded": format_amount(payment.amount_refunded, payment.currency),
            },
            "change_url": self.change_url(payment),
            "has_view_permission": self.has_view_permission(request, payment),
        }
        return TemplateResponse(request, "admin/payments/payment/action_confirmation.html", context)


@admin.register(Merchant)
class MerchantAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "created_at")
    search_fields = ("=id", "name")
    show_full_result_count = False
    fields = ("id", "name", "gateways", "created_at")
    readonly_fields = fields


class ApiKeyAddForm(forms.ModelForm[ApiKey]):
    """A new key for a merchant: who, what it is called, its mode and, for a restricted key,
    its scopes (checked by the service's own rule). The key is made on save and shown once."""

    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in SCOPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="restricted keys only",
    )

    class Meta:
        model = ApiKey
        fields = ("merchant", "name", "live", "restricted", "scopes")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            data["scopes"] = api_key_scopes_validate(
                restricted=bool(data.get("restricted")), scopes=list(data.get("scopes") or [])
            )
        except ValidationFailed as exc:
            raise forms.ValidationError({"scopes": exc.message}) from None
        return data


@admin.register(RiskRules)
class RiskRulesAdmin(admin.ModelAdmin[RiskRules]):
    """A merchant's risk rules (payments/risk.py): amount limits per currency, blocked
    countries, velocity limits per card and per customer. Empty fields take the settings'
    defaults; the model's ``clean`` checks the JSON fields' shapes."""

    list_display = (
        "merchant",
        "enabled",
        "max_amounts",
        "blocked_countries",
        "card_velocity_limit",
        "customer_velocity_limit",
        "velocity_window_seconds",
    )
    list_filter = ("enabled",)
    search_fields = ("=merchant__id",)
    raw_id_fields = ("merchant",)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Merchants' API keys, by display prefix (the key itself is never stored). Staff may make
    a key (shown once, on the next page), roll or revoke keys with the list's actions, and
    change a key's rate limit; nothing else of a key changes after it is made."""

    list_display = (
        "prefix",
        "name",
        "merchant",
        "live",
        "restricted",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "rate_limit_per_second",
        "rate_limit_burst",
    )
    list_filter = ("live", "restricted")
    search_fields = ("=merchant__id", "prefix")
    fields = (
        "id",
        "merchant",
        "name",
        "prefix",
        "live",
        "restricted",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "rate_limit_per_second",
        "rate_limit_burst",
    )
    # Everything but the rate limits: a key's rights and mode are fixed when it is made.
    readonly_fields = tuple(name for name in fields if not name.startswith("rate_limit_"))
    actions = ("roll_keys", "revoke_keys")

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return ApiKeyAddForm.Meta.fields if obj is None else self.fields

    def get_readonly_fields(
        self, request: HttpRequest, obj: ApiKey | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = api_key_create(
            merchant=obj.merchant,
            live=obj.live,
            name=obj.name,
            restricted=obj.restricted,
            scopes=form.cleaned_data["scopes"],
        )
        obj.pk, obj._state.adding = key.pk, False
        obj.refresh_from_db()
        messages.warning(request, f"The new key, shown this once: {raw}")

    @admin.action(
        description="Roll the selected keys (the old ones stay valid for a day)",
        permissions=["change"],
    )
    def roll_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            try:
                _new, raw = api_key_roll(
                    merchant=key.merchant, caller=None, key_id=key.id, expires_in=24 * 3600
                )
            except PaymentError as exc:
                messages.error(request, f"{key.prefix}…: {exc.message}")
                continue
            messages.warning(request, f"{key.prefix}… rolled; the new key, shown this once: {raw}")

    @admin.action(description="Revoke the selected keys at once", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(merchant=key.merchant, caller=None, key_id=key.id)
            revoked += 1
        messages.success(request, f"{revoked} key(s) revoked")

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "payment_id",
        "amount_display",
        "status",
        "gateway_reference",
        "created_at",
    )
    list_filter = ("status",)
    search_fields = ("=id", "=payment__id", "=gateway_reference")
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    fields = (
        "id",
        "payment",
        "amount_display",
        "status",
        "reason",
        "gateway_reference",
        "failure_code",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, refund: Refund) -> str:
        return format_amount(refund.amount, refund.currency)
