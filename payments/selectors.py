"""Reads of payments, always scoped to one merchant."""

from __future__ import annotations

from django.db.models import QuerySet

from common.pagination import cursor_page

from .errors import PaymentNotFound
from .models import Merchant, Payment, PaymentEvent, Refund
from .validation import ListParams


def payment_get(*, merchant: Merchant, payment_id: str) -> Payment:
    """The merchant's payment; another merchant's id is ``PaymentNotFound`` like a missing one."""
    try:
        return Payment.objects.get(merchant=merchant, pk=payment_id)
    except Payment.DoesNotExist:
        raise PaymentNotFound(f"no such payment: {payment_id}", param="id") from None


def payment_list(*, merchant: Merchant, params: ListParams) -> tuple[list[Payment], bool]:
    """One page of the merchant's payments, newest first, and whether more lie beyond it.

    Ids sort by creation time, so the cursor is the id itself: ``starting_after`` pages to
    older payments, ``ending_before`` to newer ones.
    """
    qs: QuerySet[Payment] = Payment.objects.filter(merchant=merchant)
    if params.status:
        qs = qs.filter(status=params.status)
    if params.created_gte:
        qs = qs.filter(created_at__gte=params.created_gte)
    if params.created_lt:
        qs = qs.filter(created_at__lt=params.created_lt)
    if params.merchant_reference is not None:
        qs = qs.filter(merchant_reference=params.merchant_reference)
    return cursor_page(
        qs,
        limit=params.limit,
        starting_after=params.starting_after,
        ending_before=params.ending_before,
    )


def payment_events(*, merchant: Merchant, payment_id: str) -> list[PaymentEvent]:
    """The payment's events, oldest first."""
    payment = payment_get(merchant=merchant, payment_id=payment_id)
    return list(PaymentEvent.objects.filter(payment=payment).order_by("sequence"))


def refund_list(*, merchant: Merchant, payment_id: str) -> list[Refund]:
    """The payment's refunds, newest first."""
    payment = payment_get(merchant=merchant, payment_id=payment_id)
    return list(Refund.objects.filter(payment=payment).order_by("-id"))
