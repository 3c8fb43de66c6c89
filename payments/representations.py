"""Plain-dict views of payment objects, shared by the API and the outbox payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import Payment, PaymentEvent, Refund


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, or None."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def payment_to_dict(payment: Payment) -> dict[str, Any]:
    failure = None
    if payment.failure_code:
        failure = {"code": payment.failure_code, "message": payment.failure_message}
    return {
        "id": payment.id,
        "object": "payment",
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "capture_method": payment.capture_method,
        "amount_authorized": payment.amount_authorized,
        "amount_captured": payment.amount_captured,
        "amount_refunded": payment.amount_refunded,
        "payment_method": payment.payment_method,
        "customer": payment.customer,
        "description": payment.description,
        "merchant_reference": payment.merchant_reference,
        "metadata": payment.metadata,
        "gateway": payment.gateway or None,
        "gateway_reference": payment.gateway_reference or None,
        "failure": failure,
        "authorization_expires_at": iso(payment.authorization_expires_at),
        "version": payment.version,
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
    }


def event_to_dict(event: PaymentEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "payment": event.payment_id,
        "sequence": event.sequence,
        "from_status": event.from_status or None,
        "to_status": event.to_status,
        "data": event.data,
        "actor": event.actor,
        "created_at": iso(event.created_at),
    }


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "payment": refund.payment_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "reason": refund.reason,
        "status": refund.status,
        "failure": {"code": refund.failure_code} if refund.failure_code else None,
        "created_at": iso(refund.created_at),
        "updated_at": iso(refund.updated_at),
    }
