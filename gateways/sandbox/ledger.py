"""Read-only views of the sandbox ledger, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateways.models import SandboxLedgerEntry, SandboxOperation


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A read-only copy of one sandbox ledger row."""

    gateway: str
    operation: str
    reference: str
    order_reference: str
    gateway_reference: str
    amount: int
    currency: str
    token: str
    created_at: datetime


def ledger_entries(
    *,
    gateway: str | None = None,
    order_reference: str | None = None,
    operation: str | None = None,
) -> list[LedgerEntry]:
    """Every sandbox ledger row matching the given filters (all when none), oldest first."""
    rows = SandboxLedgerEntry.objects.all()
    if gateway is not None:
        rows = rows.filter(gateway=gateway)
    if order_reference is not None:
        rows = rows.filter(order_reference=order_reference)
    if operation is not None:
        rows = rows.filter(operation=operation)
    return [
        LedgerEntry(
            gateway=row.gateway,
            operation=row.operation,
            reference=row.reference,
            order_reference=row.order_reference,
            gateway_reference=row.gateway_reference,
            amount=row.amount,
            currency=row.currency,
            token=row.token,
            created_at=row.created_at,
        )
        for row in rows.order_by("id")
    ]


def charge_count(order_reference: str) -> int:
    """How many charges (authorize ledger rows) exist for an order, across all sandbox accounts.

    A payment charged exactly once has ``charge_count(payment_id) == 1``.
    """
    return SandboxLedgerEntry.objects.filter(
        operation=SandboxOperation.AUTHORIZE, order_reference=order_reference
    ).count()
