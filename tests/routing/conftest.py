"""Routing tests: a fresh Redis namespace for the live metrics of every test, the database
(gateway configuration), and helpers to build facts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from gateways.breaker import breaker_for
from gateways.bulkhead import bulkhead_for
from gateways.registry import register, unregister
from gateways.sandbox.adapter import SandboxGateway
from routing.models import GatewayConfig
from routing.selectors import clear_cache
from routing.types import PaymentFacts

GATEWAYS = ["sandbox_a", "sandbox_b"]


@pytest.fixture(autouse=True)
def _routing_namespace(settings: object, db: None) -> None:
    """Unique metrics keys; the configuration cache is on (as in production) and emptied."""
    settings.ROUTING_METRICS_PREFIX = f"aegispay:test-routing:{uuid.uuid4().hex}:"  # type: ignore[attr-defined]
    clear_cache()


@pytest.fixture
def sandbox_c(db: None) -> Iterator[str]:
    """A third sandbox account, registered and configured for this test only."""
    register(SandboxGateway("sandbox_c"))
    breaker_for("sandbox_c").reset()
    bulkhead_for("sandbox_c").reset()
    GatewayConfig.objects.create(
        name="sandbox_c", methods=["card"], fee_fixed=20, fee_bps=200, priority=3
    )
    yield "sandbox_c"
    unregister("sandbox_c")
    breaker_for("sandbox_c").reset()


def facts(payment_id: str = "pay_1", merchant_id: str = "mer_1", **changes: object) -> PaymentFacts:
    values: dict = {
        "payment_id": payment_id,
        "merchant_id": merchant_id,
        "amount": 2000,
        "currency": "USD",
        "method": "card",
        "country": "US",
        "metadata": {},
    }
    values.update(changes)
    return PaymentFacts(**values)
