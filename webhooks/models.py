"""Merchant webhooks: where a merchant wants its events, one delivery per (endpoint, event), and
each HTTP try of it.

The tables keep the names they had when these models were part of ``outbox`` (``db_table``,
index and constraint names): moving the code to its own app changed no schema
(``outbox/migrations/0005_webhooks_move_out.py``, ``webhooks/migrations/0001_initial.py``).
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from django.db import models

from common.encryption import EncryptedTextField
from common.ids import new_id


def new_webhook_endpoint_id() -> str:
    """A new ``we_…`` id, time-ordered like every other id, so endpoint lists page by id."""
    return new_id("we")


def new_webhook_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` and base64 of 256 random bits."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class WebhookEndpoint(models.Model):
    """Where a merchant wants its events POSTed, and which events it wants.

    ``secret`` is kept (not hashed) because every delivery is signed with it, and encrypted at
    rest with ``FIELD_ENCRYPTION_KEYS`` (``common/encryption.py``), as ``previous_secret`` is;
    the API shows it only in the answer to the create call. Endpoints are disabled, never
    deleted, so their deliveries and attempts stay visible to staff.
    """

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    id = models.CharField(primary_key=True, max_length=40, default=new_webhook_endpoint_id)
    # A plain id, not a foreign key, as when these models lived in outbox (no schema change).
    merchant_id = models.CharField(max_length=40)
    url = models.CharField(max_length=2048)
    # Patterns: "*", "payment.*", "refund.*" or exact event types such as "payment.captured".
    events = models.JSONField(default=list)
    secret = EncryptedTextField()
    # The secret before the last rotation, which signs too until ``previous_secret_expires_at``
    # (services.webhook_endpoint_rotate_secret): a receiver holding either verifies.
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    # Made with a live key or a test key: it receives only the events of payments of its mode.
    livemode = models.BooleanField(default=False, db_default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "outbox_webhookendpoint"
        ordering = ("-id",)
        indexes = [
            # The merchant's list (newest first) and the dispatcher's "enabled endpoints of
            # these merchants" both start from the merchant.
            models.Index(fields=["merchant_id", "id"], name="webhook_endpoint_merchant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.url} ({self.status})"

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a delivery sent ``now``: the current one, and the previous one
        while its overlap lasts."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and expires > now:
            return [self.secret, self.previous_secret]
        return [self.secret]


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
        db_table = "outbox_webhookdelivery"
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
        db_table = "outbox_webhookattempt"
        ordering = ("-attempted_at", "-id")
        indexes = [models.Index(fields=["delivery", "attempted_at"], name="webhook_attempt_idx")]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.attempted_at}: {self.status_code or self.error}"
