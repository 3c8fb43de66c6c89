"""Storage of the sandbox gateway: its ledger and its request log.

They live in PostgreSQL, not in memory, because the sandbox must behave like one remote gateway
seen by many processes (web, Celery workers, the test process) and must survive a process kill.
Only ``gateways/sandbox/`` writes them.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from gateways.base import Outcome


class SandboxOperation(models.TextChoices):
    """The operations the sandbox gateway takes (the ledger) or answers (the request log)."""

    AUTHORIZE = "authorize", "authorize"
    CAPTURE = "capture", "capture"
    VOID = "void", "void"
    REFUND = "refund", "refund"
    LOOKUP = "lookup", "lookup"


LEDGER_OPERATIONS = (
    SandboxOperation.AUTHORIZE,
    SandboxOperation.CAPTURE,
    SandboxOperation.VOID,
    SandboxOperation.REFUND,
)


class SandboxLedgerEntry(models.Model):
    """One operation a sandbox gateway account took: money authorised, captured, voided or refunded.

    ``reference`` is the idempotency reference the gateway was sent; the unique constraint on
    ``(gateway, operation, reference)`` is what makes a retried or raced call a no-op.
    ``gateway_reference`` is the gateway's id of the charge; capture, void and refund rows carry
    the id of the charge they apply to, so all rows of one charge share it.
    """

    gateway = models.CharField(max_length=64)
    operation = models.CharField(
        max_length=16,
        choices=[(op.value, op.label) for op in LEDGER_OPERATIONS],
    )
    reference = models.CharField(max_length=255)
    order_reference = models.CharField(max_length=255)
    gateway_reference = models.CharField(max_length=64)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    token = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "sandbox ledger entry"
        verbose_name_plural = "sandbox ledger entries"
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=("gateway", "operation", "reference"),
                name="gateways_sandboxledger_unique_reference",
            ),
            models.UniqueConstraint(
                fields=("gateway_reference",),
                condition=models.Q(operation="authorize"),
                name="gateways_sandboxledger_unique_charge",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=0),
                name="gateways_sandboxledger_amount_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=("order_reference",), name="gw_ledger_order_idx"),
            # The account and the charge, in the order a charge's sums group by: with the charge
            # alone, on a young table's statistics the planner took the unique (gateway,
            # operation, reference) index for the sums and read every row of the account
            # (issue 13; tests/gateways/test_sandbox.py).
            models.Index(
                fields=("gateway", "gateway_reference", "operation"), name="gw_ledger_charge_idx2"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.gateway} {self.operation} {self.reference} {self.amount} {self.currency}"


class SandboxRequest(models.Model):
    """One call made to a sandbox gateway account, whatever its outcome.

    Used to count earlier authorize calls per ``order_reference`` (``tok_processingError`` and
    ``tok_timeout`` depend on it) and to answer lookups of declined references.
    """

    gateway = models.CharField(max_length=64)
    operation = models.CharField(max_length=16, choices=SandboxOperation.choices)
    reference = models.CharField(max_length=255)
    order_reference = models.CharField(max_length=255, blank=True)
    token = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=[(o.value, o.value) for o in Outcome])
    decline_code = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "sandbox request"
        verbose_name_plural = "sandbox requests"
        ordering = ("id",)
        indexes = [
            models.Index(fields=("operation", "order_reference"), name="gw_request_order_idx"),
            models.Index(fields=("gateway", "operation", "reference"), name="gw_request_ref_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.gateway} {self.operation} {self.reference} -> {self.outcome}"
