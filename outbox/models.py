"""The transactional outbox: one row per event, written in the transaction that made the event."""

from __future__ import annotations

import secrets

from django.db import models

from common.ids import new_id

from .types import OutboxEvent


class OutboxMessage(models.Model):
    class State(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        DEAD = "dead"

    event_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=40)
    # The per-aggregate order of events (the payment's event sequence).
    sequence = models.PositiveIntegerField()
    merchant_id = models.CharField(max_length=40)
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbox_pending_idx",
                condition=models.Q(state="pending"),
            ),
            models.Index(fields=["aggregate_id", "sequence"], name="outbox_aggregate_idx"),
            # The relay's order check: is an earlier event of this aggregate still unpublished?
            models.Index(
                fields=["aggregate_id", "sequence"],
                name="outbox_unpublished_idx",
                condition=~models.Q(state="published"),
            ),
            # Pruning published rows past their retention.
            models.Index(
                fields=["published_at"],
                name="outbox_published_idx",
                condition=models.Q(state="published"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}#{self.sequence} {self.state}"

    def as_event(self) -> OutboxEvent:
        """This row as the plain value the relay hands to the bus and the consumers."""
        return OutboxEvent(
            event_id=self.event_id,
            event_type=self.event_type,
            aggregate_type=self.aggregate_type,
            aggregate_id=self.aggregate_id,
            sequence=self.sequence,
            merchant_id=self.merchant_id,
            payload=self.payload,
        )


class OutboxConsumerMark(models.Model):
    """One event for one in-process consumer (read models, webhooks): applied yet or not.

    Written with its outbox row, in the transaction of the event, one per registered consumer
    (``outbox/registry.py``), so a consumer finds what it has not applied without depending on
    the relay or the event bus. A consumer pass (``outbox/consumers.py``) claims unapplied marks
    with ``FOR UPDATE SKIP LOCKED`` in per-aggregate order and sets ``applied_at`` in the
    transaction that applies the events: unique per (consumer, event), so each event takes
    effect once per consumer. ``aggregate_id`` and ``sequence`` are copied from the outbox row
    so the order check reads this table alone. Deleted with its outbox row when that is pruned,
    which waits until every mark of the row is applied.
    """

    consumer = models.CharField(max_length=64)
    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="marks")
    event_id = models.CharField(max_length=40)
    aggregate_id = models.CharField(max_length=40)
    sequence = models.PositiveIntegerField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "event_id"], name="outbox_consumer_mark_event_uniq"
            ),
        ]
        indexes = [
            # A consumer's backlog, oldest first.
            models.Index(
                fields=["consumer", "id"],
                name="outbox_mark_unapplied_idx",
                condition=models.Q(applied_at__isnull=True),
            ),
            # The order check: is an earlier event of this aggregate still unapplied?
            models.Index(
                fields=["consumer", "aggregate_id", "sequence"],
                name="outbox_mark_order_idx",
                condition=models.Q(applied_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        state = "applied" if self.applied_at else "pending"
        return f"{self.consumer} {self.event_id} {state}"


# --- Merchant webhooks ---


def new_webhook_endpoint_id() -> str:
    """A new ``we_…`` id, time-ordered like every other id, so endpoint lists page by id."""
    return new_id("we")


def new_webhook_secret() -> str:
    """A signing secret: ``whsec_`` and 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookEndpoint(models.Model):
    """Where a merchant wants its events POSTed, and which events it wants.

    ``secret`` is stored as is because every delivery is signed with it; the API shows it only
    in the answer to the create call. Endpoints are disabled, never deleted, so their deliveries
    and attempts stay visible to staff.
    """

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    id = models.CharField(primary_key=True, max_length=40, default=new_webhook_endpoint_id)
    # A plain id, not a foreign key: outbox never imports payments models.
    merchant_id = models.CharField(max_length=40)
    url = models.CharField(max_length=2048)
    # Patterns: "*", "payment.*", "refund.*" or exact event types such as "payment.captured".
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    created_at = models.DateTimeField(auto_now_add=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            # The merchant's list (newest first) and the dispatcher's "enabled endpoints of
            # these merchants" both start from the merchant.
            models.Index(fields=["merchant_id", "id"], name="webhook_endpoint_merchant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.url} ({self.status})"


class WebhookDelivery(models.Model):
    """One event for one endpoint: the unit that is sent, retried and resent.

    Unique per (endpoint, event), so a relay that hands over the same event twice creates no
    second delivery. ``leased_until``/``lease_token`` are the claim of the worker sending it; no
    row lock is held during the HTTP call.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries"
    )
    event_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # When the next try is due; None once the delivery succeeded or failed.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True, default="")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="webhook_delivery_endpoint_event_uniq"
            ),
        ]
        indexes = [
            # The sweep: pending deliveries whose next try is due.
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_delivery_due_idx",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["event_id"], name="webhook_delivery_event_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP try of a delivery, as staff see it: when, what came back, how long it took."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows"
    )
    attempted_at = models.DateTimeField()
    # None when no HTTP answer came back (refused URL, DNS, connection error, timeout).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True, default="")
    response_excerpt = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("-attempted_at", "-id")
        indexes = [models.Index(fields=["delivery", "attempted_at"], name="webhook_attempt_idx")]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.attempted_at}: {self.status_code or self.error}"
