"""The payment aggregate: data, constraints and the state machine's transition declarations.

Nothing here decides *when* a transition happens; the commands (``payments/services.py``) and
the gateway-call path (``payments/gateway.py``) do, through the event store's one path
(``payments/eventstore.py``) that locks the row, calls the transition, bumps ``version`` and
appends the event and the outbox row in the same transaction. ``status`` is protected: no code
can assign it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pgtrigger
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.fields.json import KT
from django.db.models.functions import Lower, Now
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from .ids import (
    new_api_key_id,
    new_attempt_id,
    new_event_id,
    new_merchant_id,
    new_payment_id,
    new_refund_id,
)


class Merchant(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_merchant_id, editable=False)
    name = models.CharField(max_length=200)
    # Gateway accounts this merchant may use, in fallback order (routing refines the choice).
    gateways = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class RiskRules(models.Model):
    """A merchant's risk rules (payments/risk.py), set by staff in the admin. Without a row, or
    with a field empty, the settings' defaults apply (``RISK_*``: every rule off)."""

    merchant = models.OneToOneField(
        Merchant, on_delete=models.CASCADE, primary_key=True, related_name="risk_rules"
    )
    enabled = models.BooleanField(default=True, help_text="off: no built-in rule runs")
    max_amounts = models.JSONField(
        default=dict,
        blank=True,
        help_text='the largest payment per currency, in minor units: {"USD": 500000}',
    )
    blocked_countries = models.JSONField(
        default=list, blank=True, help_text='customer countries refused (ISO 3166-1): ["KP"]'
    )
    card_velocity_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="payments per card token in a window; empty: default"
    )
    customer_velocity_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="payments per customer in a window; empty: default"
    )
    velocity_window_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="empty: default"
    )

    class Meta:
        verbose_name_plural = "risk rules"

    def __str__(self) -> str:
        return f"risk rules of {self.merchant_id}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        amounts = self.max_amounts
        if not isinstance(amounts, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in amounts.items()
        ):
            raise ValidationError(
                {"max_amounts": "an object of currency codes to positive minor units"}
            )
        countries = self.blocked_countries
        if not isinstance(countries, list) or not all(
            isinstance(c, str) and len(c) == 2 and c.isalpha() and c.isupper() for c in countries
        ):
            raise ValidationError({"blocked_countries": "a list of ISO 3166-1 alpha-2 codes"})


class ApiKey(models.Model):
    """A merchant's secret key. Only its SHA-256 and a short display prefix are stored."""

    id = models.CharField(primary_key=True, max_length=40, default=new_api_key_id, editable=False)
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="api_keys")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=20)
    live = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # This key's request budget (payments/authentication.py); empty: API_RATE_LIMIT_PER_SECOND
    # and API_RATE_LIMIT_BURST.
    rate_limit_per_second = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)]
    )
    rate_limit_burst = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    # What the merchant calls the key; a restricted key (``rk_…``) may do only what its
    # ``scopes`` grant (payments/scopes.py), a secret key (``sk_…``) everything.
    name = models.CharField(max_length=100, blank=True, default="")
    restricted = models.BooleanField(default=False)
    scopes = models.JSONField(default=list, blank=True)
    # A rolled key stays valid until then (payments/merchants.py ``api_key_roll``).
    expires_at = models.DateTimeField(null=True, blank=True)
    # Written at most once a minute per key (payments/authentication.py), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.merchant_id})"


class PaymentStatus(models.TextChoices):
    INITIATED = "initiated"
    PROCESSING = "processing"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    COMPLETED = "completed"
    REFUND_INITIATED = "refund_initiated"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


S = PaymentStatus
TERMINAL_STATUSES = frozenset({S.CANCELLED, S.REFUNDED, S.EXPIRED})

# Every event type payments emits (docs/API.md, "Events"), the one catalogue: a transition's
# event is named after the status it enters (``payment.<status>``, ``payment_transition``), and
# the events that change no state are these (``record_event`` refuses any other). Webhook
# endpoints subscribe to them by name (``webhooks/events.py``).
STATELESS_EVENT_TYPES = frozenset(
    {
        "payment.attempt_failed",
        "payment.capture_requested",
        "payment.cancel_requested",
        "payment.voided",
        "payment.risk_assessed",
        "refund.created",
        "refund.succeeded",
        "refund.failed",
    }
)
# A merchant's change of a payment's ``metadata`` or ``description`` (``POST /v1/payments/{id}``):
# no state changes, but fields do, so the event holds them like a transition's.
UPDATE_EVENT_TYPE = "payment.updated"
EVENT_TYPES = (
    frozenset({f"payment.{status.value}" for status in PaymentStatus})
    | STATELESS_EVENT_TYPES
    | {UPDATE_EVENT_TYPE}
)
# The patterns that select several types at once, for webhook endpoints and ``GET /v1/events``.
EVENT_WILDCARDS = frozenset({"*", "payment.*", "refund.*"})


class CaptureMethod(models.TextChoices):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


# --- transition guards (django-fsm ``conditions``): each sees only the payment ---


def _guard(check: Callable[[Payment], bool]) -> Callable[[models.Model], bool]:
    """``check`` as django-fsm types a condition (the same function, no wrapper).

    django-fsm types conditions as taking any model; it calls them with the instance whose
    transition runs, here always a ``Payment``.
    """
    return cast("Callable[[models.Model], bool]", check)


@_guard
def has_authorization(payment: Payment) -> bool:
    return 0 < payment.amount_authorized <= payment.amount


@_guard
def capture_within_authorization(payment: Payment) -> bool:
    return 0 < payment.amount_captured <= payment.amount_authorized


@_guard
def has_captured_funds(payment: Payment) -> bool:
    return payment.amount_captured > 0


@_guard
def has_refundable_amount(payment: Payment) -> bool:
    return payment.amount_refunded < payment.amount_captured


@_guard
def nothing_refunded(payment: Payment) -> bool:
    return payment.amount_refunded == 0


@_guard
def partly_refunded(payment: Payment) -> bool:
    return 0 < payment.amount_refunded < payment.amount_captured


@_guard
def fully_refunded(payment: Payment) -> bool:
    return payment.amount_captured > 0 and payment.amount_refunded == payment.amount_captured


@_guard
def has_gateway(payment: Payment) -> bool:
    return bool(payment.gateway)


@_guard
def has_failure(payment: Payment) -> bool:
    return bool(payment.failure_code)


@_guard
def failure_cleared(payment: Payment) -> bool:
    return not payment.failure_code


@_guard
def holds_no_funds(payment: Payment) -> bool:
    return payment.amount_authorized == 0 and payment.amount_captured == 0


# --- the row locks: every code that locks a payment, attempt or refund row names it so ---


class PaymentQuerySet(models.QuerySet["Payment"]):
    def locked(self) -> PaymentQuerySet:
        """These payments, locked ``FOR UPDATE`` until the transaction ends: the lock every
        change of a payment takes (``payments/eventstore.py``). ``of=("self",)``: a join never
        locks the merchant's row too."""
        return self.select_for_update(of=("self",))


class Payment(FSMModelMixin, models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_payment_id, editable=False)
    # No index of its own: the (merchant, ...) indexes below lead with it (migration 0015).
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="payments", db_index=False
    )
    status = FSMField(default=S.INITIATED, choices=S.choices, protected=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    capture_method = models.CharField(
        max_length=10, choices=CaptureMethod.choices, default=CaptureMethod.AUTOMATIC
    )
    amount_authorized = models.BigIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    payment_method = models.JSONField(default=dict)
    customer = models.JSONField(default=dict, blank=True)
    description = models.CharField(max_length=1000, blank=True, default="")
    merchant_reference = models.CharField(max_length=255, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    gateway = models.CharField(max_length=64, blank=True, default="")
    gateway_reference = models.CharField(max_length=255, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_message = models.CharField(max_length=500, blank=True, default="")
    authorization_expires_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the system last moved the payment on: every event but a merchant's
    # ``payment.updated`` sets it (``eventstore.append_event``). The sweeps that wait for a
    # payment to sit still (settlement, stalled processing) read this, not ``updated_at``, so
    # a merchant editing metadata can never hold them off.
    progressed_at = models.DateTimeField(default=timezone.now, db_default=Now())
    # Made with a live key (True) or a test key; fixed for life. Test keys see only test
    # payments and route only to sandboxes, live keys never to a sandbox. The payment's refunds
    # and events carry the same flag.
    livemode = models.BooleanField(default=False, db_default=False)

    objects = PaymentQuerySet.as_manager()

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["merchant", "-id"], name="payment_merchant_id_idx"),
            models.Index(fields=["merchant", "status", "-id"], name="payment_merchant_status_idx"),
            models.Index(
                fields=["merchant", "merchant_reference"], name="payment_merchant_ref_idx"
            ),
            models.Index(fields=["merchant", "created_at"], name="payment_merchant_created_idx"),
            # The staff list (payments/admin.py) pages newest first by ``created_at`` (so a date
            # filter is an index range) and filters on one column at a time: each filter column
            # leads an index on (column, created_at); merchant's is the one above.
            models.Index(fields=["status", "created_at"], name="payment_status_created_idx"),
            models.Index(fields=["gateway", "created_at"], name="payment_gateway_created_idx"),
            models.Index(fields=["currency", "created_at"], name="payment_currency_created_idx"),
            models.Index(fields=["created_at"], name="payment_created_idx"),
            # The staff search is exact and across merchants, so the merchant-led index above
            # cannot serve it; customer e-mails are matched lower-cased.
            models.Index(fields=["merchant_reference"], name="payment_reference_idx"),
            models.Index(fields=["gateway_reference"], name="payment_gateway_ref_idx"),
            models.Index(Lower(KT("customer__email")), name="payment_customer_email_idx"),
        ]
        # Staff actions of the back office, granted to the ``operators`` group (migration 0005).
        permissions = [
            ("retry_payment", "Can retry a failed payment"),
            ("refund_payment", "Can refund a payment"),
            ("capture_payment", "Can capture an authorised payment"),
            ("cancel_payment", "Can cancel a payment"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(amount_refunded__gte=0)
                & Q(amount_refunded__lte=F("amount_captured"))
                & Q(amount_captured__lte=F("amount_authorized"))
                & Q(amount_authorized__lte=F("amount")),
                name="payment_money_invariant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status} {self.amount} {self.currency}"

    def money_invariant_holds(self) -> bool:
        """``0 <= refunded <= captured <= authorized <= amount`` (also a database constraint)."""
        return (
            0
            <= self.amount_refunded
            <= self.amount_captured
            <= self.amount_authorized
            <= self.amount
        )

    # --- the state machine; names are the commands, targets the states of docs/ARCHITECTURE.md ---

    @transition(field=status, source=S.INITIATED, target=S.PROCESSING, conditions=[has_gateway])
    def start_processing(self) -> None:
        """A gateway attempt begins."""

    @transition(field=status, source=S.PROCESSING, target=S.PROCESSING, conditions=[has_gateway])
    def retry_attempt(self) -> None:
        """Another attempt (same or next gateway) after one that did not charge."""

    @transition(
        field=status, source=S.PROCESSING, target=S.AUTHORIZED, conditions=[has_authorization]
    )
    def authorize(self) -> None:
        """The gateway approved; ``amount_authorized`` holds what it approved."""

    @transition(
        field=status,
        source=S.AUTHORIZED,
        target=S.CAPTURED,
        conditions=[capture_within_authorization],
    )
    def capture(self) -> None:
        """Funds captured; ``amount_captured`` is at most ``amount_authorized``."""

    @transition(field=status, source=S.CAPTURED, target=S.COMPLETED)
    def complete(self) -> None:
        """A capture settled."""

    @transition(field=status, source=[S.INITIATED, S.AUTHORIZED], target=S.CANCELLED)
    def cancel(self) -> None:
        """Cancelled before processing, or an authorisation voided."""

    @transition(field=status, source=S.AUTHORIZED, target=S.EXPIRED)
    def expire(self) -> None:
        """An authorisation that was never captured ran past its window."""

    @transition(
        field=status,
        source=[S.INITIATED, S.PROCESSING, S.CAPTURED],
        target=S.FAILED,
        conditions=[has_failure],
    )
    def fail(self) -> None:
        """Declined, no gateway, or a capture that failed to settle; ``failure_code`` says why."""

    @transition(
        field=status,
        source=S.FAILED,
        target=S.INITIATED,
        conditions=[failure_cleared, holds_no_funds],
    )
    def retry(self) -> None:
        """Manual retry by operations staff: processing starts again with a new attempt."""

    @transition(
        field=status,
        source=[S.COMPLETED, S.PARTIALLY_REFUNDED],
        target=S.REFUND_INITIATED,
        conditions=[has_refundable_amount],
    )
    def initiate_refund(self) -> None:
        """A refund is in flight at the gateway."""

    @transition(
        field=status,
        source=[S.COMPLETED, S.REFUND_INITIATED],
        target=S.PARTIALLY_REFUNDED,
        conditions=[partly_refunded],
    )
    def mark_partially_refunded(self) -> None:
        """Refunds so far cover part of the captured amount."""

    @transition(
        field=status, source=S.REFUND_INITIATED, target=S.REFUNDED, conditions=[fully_refunded]
    )
    def mark_refunded(self) -> None:
        """Refunds cover the whole captured amount."""

    @transition(
        field=status,
        source=[S.REFUND_INITIATED, S.PARTIALLY_REFUNDED],
        target=S.COMPLETED,
        conditions=[has_captured_funds, nothing_refunded],
    )
    def restore_completed(self) -> None:
        """The gateway refused the only refund: back to completed, money still captured."""

    @transition(
        field=status,
        source=S.REFUND_INITIATED,
        target=S.FAILED,
        conditions=[has_failure],
    )
    def fail_refund(self) -> None:
        """Only for a refund the gateway reports failed after the funds left (see README)."""


class AttemptStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    ERROR = "error"  # retryable error, known not to have charged
    UNKNOWN = "unknown"  # a timeout: the gateway may or may not have charged


class AttemptOperation(models.TextChoices):
    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"


OPEN_ATTEMPT_STATUSES = ("pending", "unknown")


class AttemptQuerySet(models.QuerySet["PaymentAttempt"]):
    def locked(self) -> AttemptQuerySet:
        """These attempts, locked ``FOR UPDATE`` until the transaction ends (taken under the
        payment's lock, by the gateway-call path in ``payments/gateway.py``)."""
        return self.select_for_update()


class PaymentAttempt(models.Model):
    """One gateway operation on a payment; its id is the idempotency reference sent.

    At most one attempt of a payment is open (``pending`` or ``unknown``) at a time, enforced
    by a partial unique index: two captures, or a capture and a void, cannot race.
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_attempt_id, editable=False)
    # No index of its own: the unique (payment, number) leads with it (migration 0015).
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="attempts", db_index=False
    )
    number = models.PositiveIntegerField()
    operation = models.CharField(
        max_length=16, choices=AttemptOperation.choices, default=AttemptOperation.AUTHORIZE
    )
    gateway = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.PENDING
    )
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    gateway_reference = models.CharField(max_length=255, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.CharField(max_length=500, blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    routing_decision = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # The gateway-call path's bookkeeping (payments/gateway.py). ``maybe_sent``: a sender was
    # handed this operation and it is not known to have been refused, so it may have reached
    # the gateway; only a definitive answer about its reference clears it. ``fence``: the
    # payment-lock token of the sender that planned it last; only that sender may record.
    # ``next_check_at``: when the reconciler may drive it again (backoff by ``sends``).
    sends = models.PositiveIntegerField(default=0)
    maybe_sent = models.BooleanField(default=False)
    fence = models.CharField(max_length=64, blank=True, default="")
    next_check_at = models.DateTimeField(null=True, blank=True)

    objects = AttemptQuerySet.as_manager()

    class Meta:
        ordering = ("payment", "number")
        constraints = [
            models.UniqueConstraint(fields=["payment", "number"], name="attempt_payment_number"),
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(status__in=OPEN_ATTEMPT_STATUSES),
                name="attempt_one_open_per_payment",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="attempt_status_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.operation} {self.gateway} {self.status}"


class RefundStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RefundQuerySet(models.QuerySet["Refund"]):
    def locked(self) -> RefundQuerySet:
        """These refunds, locked ``FOR UPDATE`` until the transaction ends (taken under the
        payment's lock, by the gateway-call path in ``payments/gateway.py``)."""
        return self.select_for_update()


class Refund(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_refund_id, editable=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    livemode = models.BooleanField(default=False, db_default=False)  # the payment's
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=RefundStatus.choices, default=RefundStatus.PENDING
    )
    gateway_reference = models.CharField(max_length=255, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The gateway-call path's bookkeeping, exactly as on PaymentAttempt.
    sends = models.PositiveIntegerField(default=0)
    maybe_sent = models.BooleanField(default=False)
    fence = models.CharField(max_length=64, blank=True, default="")
    next_check_at = models.DateTimeField(null=True, blank=True)

    objects = RefundQuerySet.as_manager()

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            # A payment has at most one refund in flight (it is ``refund_initiated`` meanwhile).
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(status="pending"),
                name="refund_one_pending_per_payment",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="refund_status_idx")]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} {self.currency} {self.status}"


class PaymentEvent(models.Model):
    """One change of a payment, append-only in the database itself.

    ``sequence`` equals the payment's ``version`` after the change; ``(payment, sequence)`` is
    unique, which is also the optimistic-concurrency check of the event store. ``data`` holds
    ``changes``: the fields the event set, so that replaying events rebuilds the payment.

    The table is partitioned by month of its payment's creation (``payment_id`` is a
    time-ordered id; common/partitions.py, ``payments/partitions.py``): a payment's events live
    in one partition, and ``(payment, sequence)`` stays unique over the whole table. Its
    primary key in the database is ``(id, payment_id)``: a partitioned table's must include
    the partition key; ids are unique by construction (80 random bits per millisecond).
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    # No index of its own: the unique (payment, sequence) leads with it (migration 0015).
    payment = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    livemode = models.BooleanField(default=False, db_default=False)  # the payment's
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    from_status = models.CharField(max_length=32, blank=True, default="")
    to_status = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    actor = models.CharField(max_length=200)
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("payment", "sequence")
        constraints = [
            models.UniqueConstraint(fields=["payment", "sequence"], name="event_payment_sequence"),
        ]
        triggers = [
            pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete),
            pgtrigger.Trigger(
                name="no_truncate",
                when=pgtrigger.Before,
                operation=pgtrigger.Truncate,
                level=pgtrigger.Statement,
                func="RAISE EXCEPTION 'pgtrigger: Cannot truncate the payment event table';",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment_id}#{self.sequence} {self.type}"


class IdempotencyKey(models.Model):
    """A merchant's ``Idempotency-Key``: locked while its request runs, then its stored response."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    # No index of its own: the unique (merchant, livemode, key) index serves every lookup by
    # merchant. With one, the planner, on the statistics of a young table, chose it for the
    # claim's lookup and read every key of the merchant (issue 13; test_idempotency).
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, db_index=False)
    # Keys are scoped to the merchant and the mode: a test and a live request may use the same.
    livemode = models.BooleanField(default=False, db_default=False)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    locked_at = models.DateTimeField()
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "livemode", "key"], name="idempotency_merchant_mode_key"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.merchant_id}:{self.key} {self.state}"


# --- read models: projections of the event table, fed by their outbox consumer ---
#
# Written only by ``payments/projections/read_models.py`` (the consumer ``read_models``) and by
# ``manage.py replay_events --repair``; the summary and the audit trail can be rebuilt from the
# event table and ``ReadModelAppliedEvent`` (what they applied) at any time.
# Their merchant and payment references carry no database foreign key on purpose: a read model
# must never take a lock on the payment row the services lock (an FK check takes KEY SHARE,
# which waits behind ``select_for_update``), and it must never stop a write to the aggregate.


class MerchantDailySummary(models.Model):
    """Per merchant, UTC day, current status and currency: how many payments, how much money.

    Precisely: a payment counts in exactly one row, the one keyed by its merchant, the UTC date
    of its ``payment.initiated`` event's ``created_at``, the status after its last event that
    the read models have applied, and its currency. The row's amounts are sums over those
    payments of ``amount``, ``amount_authorized``, ``amount_captured`` and ``amount_refunded``
    as the payment's applied events set them. A payment moves between rows as its status
    changes; a row left with all zeros means the same as no row. Every value follows from the
    events alone (plus the payment's merchant, which never changes).
    """

    merchant = models.ForeignKey(
        Merchant, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    day = models.DateField()
    status = models.CharField(max_length=32, choices=PaymentStatus.choices)
    currency = models.CharField(max_length=3)
    payment_count = models.BigIntegerField(default=0)
    amount = models.BigIntegerField(default=0)
    amount_authorized = models.BigIntegerField(default=0)
    amount_captured = models.BigIntegerField(default=0)
    amount_refunded = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("merchant", "day", "status", "currency")
        constraints = [
            # The upsert's conflict target; it also serves "merchant X between two days".
            models.UniqueConstraint(
                fields=["merchant", "day", "status", "currency"], name="summary_merchant_day_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} {self.day} {self.status} {self.currency}: {self.payment_count}"


class PaymentAuditEntry(models.Model):
    """One row per event the read models applied: who did what to which payment, and when.

    ``event_id`` is unique: one row per event, whatever happens. ``created_at`` is the event's
    time, not the row's. The table is partitioned by month of ``created_at``
    (``payments/partitions.py``), so its unique constraint is ``(event_id, created_at)``, which
    is the same thing: an event's row always carries the event's time.
    """

    event_id = models.CharField(max_length=40)
    # Neither has an index of its own: the indexes below lead with each (migration 0015).
    merchant = models.ForeignKey(
        Merchant, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+", db_index=False
    )
    payment = models.ForeignKey(
        Payment,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_entries",
        db_index=False,
    )
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    from_status = models.CharField(max_length=32, blank=True, default="")
    to_status = models.CharField(max_length=32)
    actor = models.CharField(max_length=200)
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("created_at", "event_id")
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "created_at"], name="payments_paymentauditentry_event_id_key"
            ),
        ]
        indexes = [
            # "What did actor X do (lately)?"
            models.Index(fields=["actor", "-created_at"], name="audit_actor_created_idx"),
            # "What happened at merchant X between two times?"
            models.Index(fields=["merchant", "-created_at"], name="audit_merchant_created_idx"),
            # A payment's trail in order; replay_events compares per payment.
            models.Index(fields=["payment", "sequence"], name="audit_payment_sequence_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.payment_id}#{self.sequence} {self.type} by {self.actor}"


class ReadModelAppliedEvent(models.Model):
    """One row per event the read models applied: their own record of it, not the outbox's.

    Inserted with the event's audit row and summary delta in one transaction, ``ON CONFLICT DO
    NOTHING``: an event delivered twice finds its row and changes nothing. The outbox's consumer
    marks say what was handed over and are pruned with their rows; this table says what the
    read models hold, which is what their rebuild and ``replay_events`` compare against.
    """

    event_id = models.CharField(max_length=40, primary_key=True)
    applied_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.event_id} applied at {self.applied_at:%Y-%m-%d %H:%M:%S}"
