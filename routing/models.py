"""Routing configuration stored in the database and edited in the admin.

Merchants are referred to by their id string: routing never imports payments.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class GatewayConfig(models.Model):
    """One gateway account (``name`` as in ``gateways.registry``) and what it can take.

    Empty ``currencies`` or ``countries`` mean any; a null ``min_amount``/``max_amount`` means
    no bound. Amounts and fixed fees are minor units of the payment's currency.
    """

    name = models.CharField(max_length=64, unique=True)
    adapter = models.CharField(max_length=64, default="sandbox")
    enabled = models.BooleanField(default=True)
    currencies = models.JSONField(default=list, blank=True, help_text="ISO 4217; empty = any")
    methods = models.JSONField(default=list, blank=True, help_text='e.g. ["card"]')
    countries = models.JSONField(default=list, blank=True, help_text="ISO 3166-1; empty = any")
    min_amount = models.BigIntegerField(null=True, blank=True)
    max_amount = models.BigIntegerField(null=True, blank=True)
    fee_fixed = models.PositiveIntegerField(default=0, help_text="minor units per payment")
    fee_bps = models.PositiveIntegerField(default=0, help_text="basis points of the amount")
    priority = models.IntegerField(default=100, help_text="lower is tried first")

    class Meta:
        ordering = ("priority", "name")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        for field in ("currencies", "methods", "countries"):
            value = getattr(self, field)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValidationError({field: "a list of strings"})
        if (
            self.min_amount is not None
            and self.max_amount is not None
            and self.min_amount > self.max_amount
        ):
            raise ValidationError({"max_amount": "below min_amount"})


class RoutingStrategy(models.TextChoices):
    SCORE = "score"
    PRIORITY = "priority"
    SPLIT = "split"
    RULES = "rules"
    SUCCESS_RATE = "success_rate"


class MerchantRouting(models.Model):
    """How one merchant's payments are routed.

    ``weights`` overrides the score weights (keys ``success``, ``latency``, ``cost``,
    ``health``); ``split`` maps gateway to percentage (``{"sandbox_a": 70, "sandbox_b": 30}``);
    ``rules`` is a priority-ordered list of ``{"if": {conditions}, "gateway": name}`` with
    conditions among ``amount_gte``, ``amount_lt``, ``currency``, ``method``, ``country``
    (a value or a list) and ``metadata`` (``{key: value}``).
    """

    merchant_id = models.CharField(max_length=40, unique=True)
    strategy = models.CharField(
        max_length=20, choices=RoutingStrategy.choices, default=RoutingStrategy.SCORE
    )
    weights = models.JSONField(default=dict, blank=True)
    split = models.JSONField(default=dict, blank=True)
    rules = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "merchant routing"

    def __str__(self) -> str:
        return f"{self.merchant_id}: {self.strategy}"

    def clean(self) -> None:
        if not isinstance(self.weights, dict) or not all(
            k in {"success", "latency", "cost", "health"} and isinstance(v, int | float) and v >= 0
            for k, v in self.weights.items()
        ):
            raise ValidationError({"weights": "keys success/latency/cost/health, numbers >= 0"})
        if not isinstance(self.split, dict) or not all(
            isinstance(v, int | float) and v >= 0 for v in self.split.values()
        ):
            raise ValidationError({"split": "a mapping of gateway to percentage"})
        if not isinstance(self.rules, list) or not all(
            isinstance(r, dict) and isinstance(r.get("if", {}), dict) and r.get("gateway")
            for r in self.rules
        ):
            raise ValidationError({"rules": 'a list of {"if": {...}, "gateway": name}'})
