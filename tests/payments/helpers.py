"""Building payments in a given state through the one transition path (status is protected)."""

from __future__ import annotations

from typing import Any

from payments.eventstore import payment_transition
from payments.models import Merchant, Payment
from payments.services import payment_create

Step = tuple[str, dict[str, Any]]

AMOUNT = 1000

PATHS: dict[str, list[Step]] = {
    "initiated": [],
    "processing": [("start_processing", {"gateway": "sandbox_a"})],
}
PATHS["authorized"] = [*PATHS["processing"], ("authorize", {"amount_authorized": AMOUNT})]
PATHS["captured"] = [*PATHS["authorized"], ("capture", {"amount_captured": AMOUNT})]
PATHS["completed"] = [*PATHS["captured"], ("complete", {})]
PATHS["refund_initiated"] = [*PATHS["completed"], ("initiate_refund", {})]
PATHS["partially_refunded"] = [
    *PATHS["completed"],
    ("mark_partially_refunded", {"amount_refunded": 100}),
]
PATHS["refunded"] = [*PATHS["refund_initiated"], ("mark_refunded", {"amount_refunded": AMOUNT})]
PATHS["failed"] = [("fail", {"failure_code": "card_declined", "failure_message": "declined"})]
PATHS["cancelled"] = [("cancel", {})]
PATHS["expired"] = [*PATHS["authorized"], ("expire", {})]


def payment_in(merchant: Merchant, status: str, **fields: Any) -> Payment:
    """A payment of ``AMOUNT`` USD driven to ``status`` through ``payment_transition``."""
    payment = payment_create(
        merchant=merchant,
        amount=AMOUNT,
        currency="USD",
        payment_method={"type": "card", "token": "tok_visa"},
        actor="test",
        **fields,
    )
    for transition, changes in PATHS[status]:
        payment = payment_transition(
            payment_id=payment.id, transition=transition, actor="test", changes=changes
        )
    return payment
