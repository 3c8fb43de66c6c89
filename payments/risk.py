"""The risk checks before authorization: built-in rules per merchant, then checks of your own.

``risk_assess`` runs when a payment leaves ``initiated`` (``gateway.authorize_plan``), under the
payment's lock and before any gateway is chosen. The built-in rules read the merchant's
``RiskRules`` (the admin) or the settings' defaults:

* ``amount_limit``: the payment's amount over the merchant's limit for its currency;
* ``blocked_country``: the customer's country among the blocked ones;
* ``card_velocity`` / ``customer_velocity``: more payments with this card token, or from this
  customer (``customer.id``, else ``customer.email``), in the window than the limit. Counted
  in Redis, one pipelined round trip for both counters, in fixed windows of
  ``velocity_window_seconds`` (the count includes this payment).

Then each of ``RISK_CHECKS`` (payments/hooks.py: a time limit, isolated from failures), given a
``RiskFacts`` and answering a ``RiskVerdict`` or ``None``. Any declining verdict declines the
payment: it ends ``failed`` with ``risk_declined`` and never reaches a gateway.

Failures never block payments by themselves: a Redis that fails leaves the velocity rules
unchecked (``velocity_unchecked`` in the assessment, counted), and a check of your own that
fails or runs over counts as ``RISK_CHECK_FAILURE`` (``allow`` by default).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter
from redis.exceptions import RedisError

from .hooks import hooks, run_isolated
from .models import Payment, RiskRules

logger = logging.getLogger(__name__)

VELOCITY_UNCHECKED = Counter(
    "aegispay_risk_velocity_unchecked",
    "Payments whose velocity rules went unchecked because Redis failed",
)


@dataclass(frozen=True, slots=True)
class RiskFacts:
    """What a risk check may know of a payment (plain values)."""

    payment_id: str
    merchant_id: str
    livemode: bool
    amount: int
    currency: str
    token: str
    customer_id: str
    email: str
    country: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, payment: Payment) -> RiskFacts:
        customer = payment.customer or {}
        return cls(
            payment_id=payment.id,
            merchant_id=payment.merchant_id,
            livemode=payment.livemode,
            amount=payment.amount,
            currency=payment.currency,
            token=str(payment.payment_method.get("token", "")),
            customer_id=str(customer.get("id", "")),
            email=str(customer.get("email", "")).lower(),
            country=str(customer.get("country", "")).upper(),
            metadata=dict(payment.metadata),
        )


@dataclass(frozen=True, slots=True)
class RiskVerdict:
    """One rule's finding: its name, whether it declines the payment, and why."""

    rule: str
    decline: bool
    message: str


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """Every rule that fired, and the decision they make together."""

    verdicts: tuple[RiskVerdict, ...] = ()
    unchecked: tuple[str, ...] = ()

    @property
    def declined(self) -> bool:
        return any(verdict.decline for verdict in self.verdicts)

    @property
    def message(self) -> str:
        declining = [v.message for v in self.verdicts if v.decline]
        return "; ".join(declining) or "approved"

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": "decline" if self.declined else "approve",
            "rules": [
                {"rule": v.rule, "decline": v.decline, "message": v.message} for v in self.verdicts
            ],
            "unchecked": list(self.unchecked),
        }


@dataclass(frozen=True, slots=True)
class _Rules:
    max_amounts: Mapping[str, int]
    blocked_countries: frozenset[str]
    card_velocity_limit: int
    customer_velocity_limit: int
    window_seconds: int


def _stored_rules(payment: Payment) -> RiskRules | None:
    """The merchant's stored rules: read with the payment under its lock (``locked`` joins
    them, issue 13), or read now when the payment came without them."""
    try:
        return payment.merchant.risk_rules
    except RiskRules.DoesNotExist:
        return None


def _rules(row: RiskRules | None) -> _Rules | None:
    if row is not None and not row.enabled:
        return None

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    return _Rules(
        max_amounts=dict(row.max_amounts) if row else {},
        blocked_countries=frozenset(
            row.blocked_countries
            if row and row.blocked_countries
            else settings.RISK_BLOCKED_COUNTRIES
        ),
        card_velocity_limit=pick(
            row.card_velocity_limit if row else None, settings.RISK_CARD_VELOCITY_LIMIT
        ),
        customer_velocity_limit=pick(
            row.customer_velocity_limit if row else None, settings.RISK_CUSTOMER_VELOCITY_LIMIT
        ),
        window_seconds=pick(
            row.velocity_window_seconds if row else None, settings.RISK_VELOCITY_WINDOW_SECONDS
        ),
    )


def _velocity(facts: RiskFacts, rules: _Rules) -> tuple[list[RiskVerdict], list[str]]:
    """The velocity rules: both counters taken in one pipelined round trip."""
    counted: list[tuple[str, int, str]] = []
    window = int(time.time()) // rules.window_seconds
    if rules.card_velocity_limit and facts.token:
        counted.append(("card_velocity", rules.card_velocity_limit, f"card:{facts.token}"))
    who = facts.customer_id or facts.email
    if rules.customer_velocity_limit and who:
        counted.append(("customer_velocity", rules.customer_velocity_limit, f"customer:{who}"))
    if not counted:
        return [], []
    try:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        for _rule, _limit, subject in counted:
            key = f"aegispay:risk:{facts.merchant_id}:{int(facts.livemode)}:{subject}:{window}"
            pipe.incr(key)
            pipe.expire(key, rules.window_seconds + 60)
        replies = pipe.execute()
    except RedisError:
        logger.warning("risk velocity unchecked for %s: Redis failed", facts.payment_id)
        VELOCITY_UNCHECKED.inc()
        return [], [rule for rule, _limit, _subject in counted]
    verdicts = []
    for (rule, limit, _subject), count in zip(counted, replies[::2], strict=True):
        if int(count) > limit:
            what = "card" if rule == "card_velocity" else "customer"
            verdicts.append(
                RiskVerdict(
                    rule,
                    True,
                    f"more than {limit} payments with this {what} in {rules.window_seconds} s",
                )
            )
    return verdicts, []


def _built_in(facts: RiskFacts, row: RiskRules | None) -> tuple[list[RiskVerdict], list[str]]:
    rules = _rules(row)
    if rules is None:
        return [], []
    verdicts = []
    limit = rules.max_amounts.get(facts.currency)
    if limit is not None and facts.amount > limit:
        verdicts.append(
            RiskVerdict("amount_limit", True, f"amount over the limit of {limit} {facts.currency}")
        )
    if facts.country and facts.country in rules.blocked_countries:
        verdicts.append(
            RiskVerdict("blocked_country", True, f"payments from {facts.country} are not accepted")
        )
    velocity, unchecked = _velocity(facts, rules)
    return verdicts + velocity, unchecked


def risk_assess(payment: Payment) -> RiskAssessment:
    """The risk decision for ``payment``: the built-in rules, then ``RISK_CHECKS``."""
    facts = RiskFacts.of(payment)
    verdicts, unchecked = _built_in(facts, _stored_rules(payment))
    for name, check in hooks("RISK_CHECKS"):
        outcome = run_isolated(
            "risk_check", name, check, facts, timeout=settings.RISK_CHECK_TIMEOUT_SECONDS
        )
        if outcome.failure is not None:
            unchecked.append(name)
            if settings.RISK_CHECK_FAILURE == "decline":
                verdicts.append(
                    RiskVerdict(name, True, f"the check {name} failed ({outcome.failure})")
                )
        elif isinstance(outcome.value, RiskVerdict):
            verdicts.append(outcome.value)
    return RiskAssessment(verdicts=tuple(verdicts), unchecked=tuple(unchecked))
