"""The transactional outbox: one row per event, written in the transaction that made the event.

The merchant webhooks' endpoints, deliveries and attempts live in ``webhooks/models.py``."""

from __future__ import annotations

from django.db import models

from .types import OutboxEvent


class OutboxMessage(models.Model):
    """One event to publish. The table is partitioned by UTC day of ``created_at``
    (``outbox/partitions.py``); rows past retention go with their day's partition, dropped.
    Its primary key in the database is ``(id, created_at)``, and ``event_id`` is unique with
    ``created_at``: one row per event all the same, as a row is written only in its event's
    transaction."""

    class State(models.TextChoices):
        PENDING = "pending"
        PUBLISHED = "published"
        DEAD = "dead"

    event_id = models.CharField(max_length=40)
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
        constraints = [
            models.UniqueConstraint(
                fields=["event_id", "created_at"], name="outbox_outboxmessage_event_id_key"
            ),
        ]
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
    so the order check reads this table alone. Dropped with its outbox row's partition, which
    waits until every mark in it is applied. Partitioned like the outbox, by its row's
    ``created_at`` (``message_created_at``): the foreign key to the row is ``(message_id,
    message_created_at)`` in the database, made by migration (Django's foreign keys name one
    column).
    """

    consumer = models.CharField(max_length=64)
    message = models.ForeignKey(
        OutboxMessage, on_delete=models.CASCADE, related_name="marks", db_constraint=False
    )
    message_created_at = models.DateTimeField()
    event_id = models.CharField(max_length=40)
    aggregate_id = models.CharField(max_length=40)
    sequence = models.PositiveIntegerField()
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=["consumer", "event_id", "message_created_at"],
                name="outbox_consumer_mark_event_uniq",
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
