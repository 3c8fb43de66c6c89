"""The transactional outbox: one row per event, written in the transaction that made the event."""

from __future__ import annotations

from django.db import models


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

    class Meta:
        ordering = ("id",)
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbox_pending_idx",
                condition=models.Q(state="pending"),
            ),
            models.Index(fields=["aggregate_id", "sequence"], name="outbox_aggregate_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}#{self.sequence} {self.state}"
