"""The worked example of the README's "Hooks" section, and hooks that misbehave, registered
by tests/payments/test_risk_and_hooks.py through settings as any deployment would."""

from __future__ import annotations

import threading
import time
from typing import Any

from payments.hooks import PaymentSnapshot
from payments.risk import RiskFacts, RiskVerdict

# --- the worked example ---


def no_refunds_on_disputed_orders(command: str, payment: PaymentSnapshot) -> str | None:
    """A guard: refuse refunds of payments the merchant marked as disputed in metadata."""
    if command == "refund" and payment.metadata.get("disputed") == "yes":
        return "the order is disputed; refund it through the dispute"
    return None


def no_test_cards_for_big_amounts(facts: RiskFacts) -> RiskVerdict | None:
    """A risk check: decline sandbox cards above 100.00 in any currency's minor units."""
    if facts.token.startswith("tok_") and facts.amount > 10_000:
        return RiskVerdict("big_test_card", True, "test cards only up to 10000 minor units")
    return None


SEEN: list[dict[str, Any]] = []
_seen_lock = threading.Lock()


def remember_events(event: dict[str, Any]) -> None:
    """A listener: keep every committed event (a real one would, say, feed a data warehouse)."""
    with _seen_lock:
        SEEN.append(event)


# --- misbehaving hooks ---


def raises(*args: Any) -> None:
    raise RuntimeError("a hook with a bug")


def sleeps(*args: Any) -> str:
    time.sleep(3)
    return "too late to matter"
