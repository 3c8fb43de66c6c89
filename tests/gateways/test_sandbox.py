"""The sandbox gateway against the real PostgreSQL: tokens, idempotency, limits, races."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
from django.db import connection
from pytest_django import Settings

from gateways.base import GatewayAdapter, GatewayResult, Outcome
from gateways.models import SandboxRequest
from gateways.registry import get_gateway
from gateways.sandbox.adapter import SandboxGateway
from gateways.sandbox.ledger import charge_count, ledger_entries
from tests.gateways.factories import (
    CaptureRequestFactory,
    ChargeRequestFactory,
    RefundRequestFactory,
    VoidRequestFactory,
)

T = TypeVar("T")

# Real threads need committed data, hence transaction=True. ``available_apps`` limits the flush
# after each test to this app's tables, so it does not depend on other apps' tables being
# truncatable (payments' append-only event table refuses TRUNCATE).
racing_db = pytest.mark.django_db(transaction=True, available_apps=["gateways"])


@pytest.fixture
def gateway() -> GatewayAdapter:
    return get_gateway("sandbox_a")


@pytest.fixture
def other_gateway() -> GatewayAdapter:
    return get_gateway("sandbox_b")


def _authorized(gateway: GatewayAdapter, **kwargs: object) -> GatewayResult:
    """A fresh approved charge of 2000 USD (asserted, so a broken setup fails loudly)."""
    result = gateway.authorize(ChargeRequestFactory(**kwargs))
    assert result.outcome is Outcome.SUCCEEDED
    return result


def _in_threads(count: int, call: Callable[[int], T]) -> list[T]:
    """Run ``call(i)`` for i in range(count) on real threads released together by a barrier.

    Each thread uses its own database connection and closes it when done.
    """
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        try:
            barrier.wait(timeout=30)
            return call(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


# --- authorize: one outcome per token ---


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "brand", "last4"),
    [("tok_visa", "visa", "4242"), ("tok_mastercard", "mastercard", "4444")],
)
def test_approved_tokens_charge_once(
    gateway: GatewayAdapter, token: str, brand: str, last4: str
) -> None:
    request = ChargeRequestFactory(token=token, amount=1999, currency="EUR")

    result = gateway.authorize(request)

    assert result.outcome is Outcome.SUCCEEDED
    assert result.succeeded
    assert (result.gateway, result.operation, result.reference) == (
        "sandbox_a",
        "authorize",
        request.reference,
    )
    assert (result.amount, result.currency, result.brand, result.last4) == (
        1999,
        "EUR",
        brand,
        last4,
    )
    assert result.gateway_reference.startswith("ch_")
    assert result.decline_code is None
    assert charge_count(request.order_reference) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_insufficientFunds", "insufficient_funds"),
        ("tok_doesNotExist", "invalid_token"),
    ],
)
def test_declining_tokens_never_charge(gateway: GatewayAdapter, token: str, code: str) -> None:
    request = ChargeRequestFactory(token=token)

    result = gateway.authorize(request)

    assert result.outcome is Outcome.DECLINED
    assert (result.succeeded, result.retryable, result.is_unknown) == (False, False, False)
    assert result.decline_code == code
    assert result.message
    assert result.gateway_reference is None
    assert charge_count(request.order_reference) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [(0, "USD", "amount_invalid"), (-5, "USD", "amount_invalid"), (100, "usd", "currency_invalid")],
)
def test_invalid_amount_or_currency_is_declined(
    gateway: GatewayAdapter, amount: int, currency: str, code: str
) -> None:
    request = ChargeRequestFactory(amount=amount, currency=currency)

    result = gateway.authorize(request)

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, code)
    assert charge_count(request.order_reference) == 0


@pytest.mark.django_db
def test_processing_error_fails_twice_per_order_then_succeeds(gateway: GatewayAdapter) -> None:
    requests = ChargeRequestFactory.build_batch(
        4, token="tok_processingError", order_reference="pay_flaky"
    )

    results = [gateway.authorize(request) for request in requests]

    assert [r.outcome for r in results] == [
        Outcome.RETRYABLE_ERROR,
        Outcome.RETRYABLE_ERROR,
        Outcome.SUCCEEDED,
        Outcome.SUCCEEDED,
    ]
    assert [r.decline_code for r in results] == ["processing_error", "processing_error", None, None]
    assert [r.retryable for r in results] == [True, True, False, False]
    assert charge_count("pay_flaky") == 2


@pytest.mark.django_db
def test_processing_error_counts_attempts_across_sandbox_accounts(
    gateway: GatewayAdapter, other_gateway: GatewayAdapter
) -> None:
    first, second, third = ChargeRequestFactory.build_batch(
        3, token="tok_processingError", order_reference="pay_moving"
    )

    outcomes = [
        gateway.authorize(first).outcome,
        other_gateway.authorize(second).outcome,
        gateway.authorize(third).outcome,
    ]

    assert outcomes == [Outcome.RETRYABLE_ERROR, Outcome.RETRYABLE_ERROR, Outcome.SUCCEEDED]
    assert [e.gateway for e in ledger_entries(order_reference="pay_moving")] == ["sandbox_a"]


@pytest.mark.django_db
def test_processing_error_retried_with_the_same_reference_still_counts(
    gateway: GatewayAdapter,
) -> None:
    request = ChargeRequestFactory(token="tok_processingError")

    outcomes = [gateway.authorize(request).outcome for _ in range(3)]

    assert outcomes == [Outcome.RETRYABLE_ERROR, Outcome.RETRYABLE_ERROR, Outcome.SUCCEEDED]
    assert charge_count(request.order_reference) == 1


@pytest.mark.django_db
def test_timeout_takes_the_charge_but_loses_the_answer(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_timeout", amount=4200)

    result = gateway.authorize(request)

    assert result.outcome is Outcome.UNKNOWN
    assert result.is_unknown
    assert result.gateway_reference is None
    [charge] = ledger_entries(order_reference=request.order_reference)
    assert (charge.operation, charge.reference, charge.amount) == (
        "authorize",
        request.reference,
        4200,
    )


@pytest.mark.django_db
def test_timeout_charge_is_found_by_lookup(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_timeout", amount=4200)
    gateway.authorize(request)
    [charge] = ledger_entries(order_reference=request.order_reference)

    found = gateway.lookup(request.reference)

    assert found.outcome is Outcome.SUCCEEDED
    assert (found.operation, found.reference, found.gateway_reference) == (
        "lookup",
        request.reference,
        charge.gateway_reference,
    )
    assert (found.amount, found.currency) == (4200, "USD")


@pytest.mark.django_db
def test_timeout_retried_with_the_same_reference_returns_the_charge_without_charging_again(
    gateway: GatewayAdapter,
) -> None:
    request = ChargeRequestFactory(token="tok_timeout")
    gateway.authorize(request)

    retried = gateway.authorize(request)

    [charge] = ledger_entries(order_reference=request.order_reference)
    assert retried.outcome is Outcome.SUCCEEDED
    assert retried.gateway_reference == charge.gateway_reference
    assert charge_count(request.order_reference) == 1


# --- authorize: idempotency by reference ---


@pytest.mark.django_db
def test_authorize_twice_with_one_reference_leaves_one_ledger_row(
    gateway: GatewayAdapter,
) -> None:
    request = ChargeRequestFactory()

    first = gateway.authorize(request)
    second = gateway.authorize(request)

    assert second.outcome is Outcome.SUCCEEDED
    assert second.gateway_reference == first.gateway_reference
    assert len(ledger_entries(order_reference=request.order_reference)) == 1


@pytest.mark.django_db
def test_reusing_a_reference_for_a_different_charge_is_refused(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(amount=2000)
    gateway.authorize(request)

    reused = gateway.authorize(ChargeRequestFactory(reference=request.reference, amount=9999))

    assert (reused.outcome, reused.decline_code) == (Outcome.DECLINED, "idempotency_key_reused")
    assert len(ledger_entries(gateway="sandbox_a", operation="authorize")) == 1


@pytest.mark.django_db
def test_sandbox_accounts_keep_separate_ledgers(
    gateway: GatewayAdapter, other_gateway: GatewayAdapter
) -> None:
    request = ChargeRequestFactory()

    on_a = gateway.authorize(request)
    on_b = other_gateway.authorize(request)

    assert on_a.gateway_reference != on_b.gateway_reference
    assert [e.gateway for e in ledger_entries(order_reference=request.order_reference)] == [
        "sandbox_a",
        "sandbox_b",
    ]
    assert charge_count(request.order_reference) == 2


@pytest.mark.django_db
def test_authorize_with_capture_records_the_capture(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(capture=True, amount=3100)

    result = gateway.authorize(request)

    entries = ledger_entries(order_reference=request.order_reference)
    assert result.outcome is Outcome.SUCCEEDED
    assert [(e.operation, e.amount, e.gateway_reference) for e in entries] == [
        ("authorize", 3100, result.gateway_reference),
        ("capture", 3100, result.gateway_reference),
    ]


@pytest.mark.django_db
def test_every_call_is_logged(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_chargeDeclined")

    gateway.authorize(request)
    gateway.lookup(request.reference)

    logged = list(
        SandboxRequest.objects.filter(reference=request.reference).values_list(
            "operation", "outcome", "decline_code"
        )
    )
    assert logged == [
        ("authorize", "declined", "card_declined"),
        ("lookup", "declined", "card_declined"),
    ]


# --- lookup ---


@pytest.mark.django_db
def test_lookup_of_an_unknown_reference_is_not_found(gateway: GatewayAdapter) -> None:
    result = gateway.lookup("att_never_sent")

    assert result.outcome is Outcome.NOT_FOUND
    assert result.gateway_reference is None


@pytest.mark.django_db
def test_lookup_finds_a_capture_a_refund_and_a_void_by_their_references(
    gateway: GatewayAdapter,
) -> None:
    charge = _authorized(gateway, amount=3000)
    capture = CaptureRequestFactory(gateway_reference=charge.gateway_reference, amount=3000)
    refund = RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=700)
    other = _authorized(gateway, amount=1000)
    void = VoidRequestFactory(gateway_reference=other.gateway_reference)
    gateway.capture(capture)
    gateway.refund(refund)
    gateway.void(void)

    found = [
        gateway.lookup(capture.reference, "capture"),
        gateway.lookup(refund.reference, "refund"),
        gateway.lookup(void.reference, "void"),
    ]

    assert [(r.outcome, r.amount, r.gateway_reference) for r in found] == [
        (Outcome.SUCCEEDED, 3000, charge.gateway_reference),
        (Outcome.SUCCEEDED, 700, charge.gateway_reference),
        (Outcome.SUCCEEDED, 1000, other.gateway_reference),
    ]


@pytest.mark.django_db
def test_lookup_of_an_operation_is_by_operation(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway)
    refused = RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=100)
    gateway.refund(refused)  # nothing captured yet: refused

    results = [
        gateway.lookup(refused.reference, "refund").outcome,
        gateway.lookup(refused.reference, "capture").outcome,
        gateway.lookup("re_never_sent", "refund").outcome,
    ]

    assert results == [Outcome.DECLINED, Outcome.NOT_FOUND, Outcome.NOT_FOUND]


@pytest.mark.django_db
def test_lookup_of_a_declined_reference_is_declined(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_insufficientFunds")
    gateway.authorize(request)

    result = gateway.lookup(request.reference)

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "insufficient_funds")


@pytest.mark.django_db
def test_lookup_of_a_retryable_error_is_not_found(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_processingError")
    gateway.authorize(request)

    assert gateway.lookup(request.reference).outcome is Outcome.NOT_FOUND


@pytest.mark.django_db
def test_lookup_is_scoped_to_the_account(
    gateway: GatewayAdapter, other_gateway: GatewayAdapter
) -> None:
    charged = _authorized(gateway)

    assert other_gateway.lookup(charged.reference).outcome is Outcome.NOT_FOUND


# --- capture ---


@pytest.mark.django_db
def test_partial_captures_up_to_the_authorised_amount(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000)

    results = [
        gateway.capture(CaptureRequestFactory(gateway_reference=charge.gateway_reference, amount=a))
        for a in (1500, 600, 500)
    ]

    assert [(r.outcome, r.decline_code) for r in results] == [
        (Outcome.SUCCEEDED, None),
        (Outcome.DECLINED, "amount_exceeds_authorized"),
        (Outcome.SUCCEEDED, None),
    ]
    assert results[0].gateway_reference == charge.gateway_reference
    captured = ledger_entries(gateway="sandbox_a", operation="capture")
    assert sum(e.amount for e in captured) == 2000


@pytest.mark.django_db
def test_capture_is_idempotent_by_reference(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000)
    capture = CaptureRequestFactory(gateway_reference=charge.gateway_reference, amount=2000)

    first = gateway.capture(capture)
    second = gateway.capture(capture)

    assert (first.outcome, second.outcome) == (Outcome.SUCCEEDED, Outcome.SUCCEEDED)
    assert second.amount == 2000
    assert len(ledger_entries(gateway="sandbox_a", operation="capture")) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        (2001, "USD", "amount_exceeds_authorized"),
        (0, "USD", "amount_invalid"),
        (1000, "EUR", "currency_mismatch"),
    ],
)
def test_invalid_capture_is_declined(
    gateway: GatewayAdapter, amount: int, currency: str, code: str
) -> None:
    charge = _authorized(gateway, amount=2000)

    result = gateway.capture(
        CaptureRequestFactory(
            gateway_reference=charge.gateway_reference, amount=amount, currency=currency
        )
    )

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, code)
    assert ledger_entries(gateway="sandbox_a", operation="capture") == []


@pytest.mark.django_db
def test_capture_of_an_unknown_charge_is_declined(gateway: GatewayAdapter) -> None:
    result = gateway.capture(CaptureRequestFactory(gateway_reference="ch_nothing"))

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "charge_not_found")


@pytest.mark.django_db
def test_capture_of_another_accounts_charge_is_declined(
    gateway: GatewayAdapter, other_gateway: GatewayAdapter
) -> None:
    charge = _authorized(gateway)

    result = other_gateway.capture(
        CaptureRequestFactory(gateway_reference=charge.gateway_reference)
    )

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "charge_not_found")


# --- void ---


@pytest.mark.django_db
def test_void_releases_an_uncaptured_authorisation_once(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000)
    void = VoidRequestFactory(gateway_reference=charge.gateway_reference)

    first = gateway.void(void)
    again = gateway.void(void)
    capture = gateway.capture(CaptureRequestFactory(gateway_reference=charge.gateway_reference))

    assert (first.outcome, first.amount) == (Outcome.SUCCEEDED, 2000)
    assert again.outcome is Outcome.SUCCEEDED
    assert (capture.outcome, capture.decline_code) == (Outcome.DECLINED, "authorization_voided")
    assert len(ledger_entries(gateway="sandbox_a", operation="void")) == 1


@pytest.mark.django_db
def test_void_of_a_captured_charge_is_declined(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, capture=True)

    result = gateway.void(VoidRequestFactory(gateway_reference=charge.gateway_reference))

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "charge_already_captured")
    assert ledger_entries(gateway="sandbox_a", operation="void") == []


@pytest.mark.django_db
def test_second_void_under_another_reference_is_declined(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway)
    gateway.void(VoidRequestFactory(gateway_reference=charge.gateway_reference))

    result = gateway.void(VoidRequestFactory(gateway_reference=charge.gateway_reference))

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "authorization_voided")


# --- refund ---


@pytest.mark.django_db
def test_refunds_never_exceed_the_captured_amount(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000, capture=True)

    results = [
        gateway.refund(RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=a))
        for a in (1200, 900, 800, 1)
    ]

    assert [(r.outcome, r.decline_code) for r in results] == [
        (Outcome.SUCCEEDED, None),
        (Outcome.DECLINED, "amount_exceeds_captured"),
        (Outcome.SUCCEEDED, None),
        (Outcome.DECLINED, "amount_exceeds_captured"),
    ]
    refunded = ledger_entries(gateway="sandbox_a", operation="refund")
    assert sum(e.amount for e in refunded) == 2000


@pytest.mark.django_db
def test_refund_is_limited_to_what_was_captured_not_authorised(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000)
    gateway.capture(CaptureRequestFactory(gateway_reference=charge.gateway_reference, amount=700))

    over = gateway.refund(
        RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=701)
    )
    exact = gateway.refund(
        RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=700)
    )

    assert (over.outcome, over.decline_code) == (Outcome.DECLINED, "amount_exceeds_captured")
    assert (exact.outcome, exact.amount) == (Outcome.SUCCEEDED, 700)


@pytest.mark.django_db
def test_refund_of_an_uncaptured_charge_is_declined(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway)

    result = gateway.refund(RefundRequestFactory(gateway_reference=charge.gateway_reference))

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "amount_exceeds_captured")


@pytest.mark.django_db
def test_refund_is_idempotent_by_reference_even_when_fully_refunded(
    gateway: GatewayAdapter,
) -> None:
    charge = _authorized(gateway, amount=2000, capture=True)
    refund = RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=2000)

    first = gateway.refund(refund)
    replay = gateway.refund(refund)

    assert (first.outcome, replay.outcome) == (Outcome.SUCCEEDED, Outcome.SUCCEEDED)
    assert (replay.reference, replay.amount) == (refund.reference, 2000)
    assert len(ledger_entries(gateway="sandbox_a", operation="refund")) == 1


@pytest.mark.django_db
def test_refund_reference_reused_for_another_amount_is_refused(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=2000, capture=True)
    refund = RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=500)
    gateway.refund(refund)

    reused = gateway.refund(
        RefundRequestFactory(
            reference=refund.reference, gateway_reference=charge.gateway_reference, amount=600
        )
    )

    assert (reused.outcome, reused.decline_code) == (Outcome.DECLINED, "idempotency_key_reused")


@pytest.mark.django_db
def test_refund_in_another_currency_is_declined(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, capture=True)

    result = gateway.refund(
        RefundRequestFactory(gateway_reference=charge.gateway_reference, currency="GBP")
    )

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "currency_mismatch")


# --- latency ---


@pytest.mark.django_db
def test_latency_comes_from_settings(settings: Settings) -> None:
    settings.SANDBOX_LATENCY_MS = 40

    result = SandboxGateway("sandbox_a").authorize(ChargeRequestFactory())

    assert result.latency_ms >= 40


@pytest.mark.django_db
def test_constructor_latency_overrides_settings(settings: Settings) -> None:
    settings.SANDBOX_LATENCY_MS = 1000

    result = SandboxGateway("sandbox_a", latency_ms=0).lookup("att_none")

    assert result.outcome is Outcome.NOT_FOUND
    assert 0 <= result.latency_ms < 1000


# --- concurrency: real threads, separate connections ---


@racing_db
def test_racing_authorizes_of_one_reference_leave_one_ledger_row(
    gateway: GatewayAdapter,
) -> None:
    request = ChargeRequestFactory()

    results = _in_threads(8, lambda _: gateway.authorize(request))

    assert {r.outcome for r in results} == {Outcome.SUCCEEDED}
    assert len({r.gateway_reference for r in results}) == 1
    assert len(ledger_entries(order_reference=request.order_reference)) == 1


@racing_db
def test_racing_reuse_of_one_reference_across_orders_leaves_one_ledger_row(
    gateway: GatewayAdapter,
) -> None:
    # Different orders take different order locks, so only the unique constraint (and
    # get_or_create's IntegrityError handling) stands between the threads.
    requests = ChargeRequestFactory.build_batch(6, reference="att_shared")

    results = _in_threads(6, lambda i: gateway.authorize(requests[i]))

    assert Counter(r.outcome for r in results) == {Outcome.SUCCEEDED: 1, Outcome.DECLINED: 5}
    assert {r.decline_code for r in results} == {None, "idempotency_key_reused"}
    assert sum(charge_count(r.order_reference) for r in requests) == 1


@racing_db
def test_racing_timeouts_of_one_reference_charge_once(gateway: GatewayAdapter) -> None:
    request = ChargeRequestFactory(token="tok_timeout")

    results = _in_threads(6, lambda _: gateway.authorize(request))

    assert Counter(r.outcome for r in results) == {Outcome.UNKNOWN: 1, Outcome.SUCCEEDED: 5}
    assert charge_count(request.order_reference) == 1


@racing_db
def test_racing_processing_errors_fail_exactly_twice(gateway: GatewayAdapter) -> None:
    requests = ChargeRequestFactory.build_batch(
        6, token="tok_processingError", order_reference="pay_raced"
    )

    results = _in_threads(6, lambda i: gateway.authorize(requests[i]))

    assert Counter(r.outcome for r in results) == {
        Outcome.RETRYABLE_ERROR: 2,
        Outcome.SUCCEEDED: 4,
    }
    assert charge_count("pay_raced") == 4


@racing_db
def test_racing_refunds_never_exceed_the_captured_amount(gateway: GatewayAdapter) -> None:
    charge = _authorized(gateway, amount=1000, capture=True, order_reference="pay_refunded")
    refunds = RefundRequestFactory.build_batch(
        6, gateway_reference=charge.gateway_reference, amount=300
    )

    results = _in_threads(6, lambda i: gateway.refund(refunds[i]))

    assert Counter(r.outcome for r in results) == {Outcome.SUCCEEDED: 3, Outcome.DECLINED: 3}
    assert {r.decline_code for r in results} == {None, "amount_exceeds_captured"}
    refunded = ledger_entries(order_reference="pay_refunded", operation="refund")
    assert sum(e.amount for e in refunded) == 900


@pytest.mark.django_db
def test_a_charges_sums_read_only_its_rows_even_on_a_young_tables_statistics() -> None:
    """Statistics taken while the ledger was empty (a new deployment, or make bench-lifecycle's
    start), then thousands of one account's charges: a capture's or refund's sums go straight
    to the charge's rows. With the charge index on ``gateway_reference`` alone, the planner
    took the unique (gateway, operation, reference) index and read every row of the account:
    0.29 ms a capture at 2,000 rows in bench-lifecycle, growing with the ledger."""
    from gateways.models import SandboxLedgerEntry
    from gateways.sandbox.adapter import charge_sums

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE gateways_sandboxledgerentry")
    SandboxLedgerEntry.objects.bulk_create(
        SandboxLedgerEntry(
            gateway="sandbox_a",
            operation="authorize",
            reference=f"ref-{n}",
            order_reference=f"order-{n}",
            gateway_reference=f"ch_{n}",
            amount=1000,
            currency="EUR",
            token="tok_visa",
        )
        for n in range(3000)
    )
    plan = charge_sums("sandbox_a", "ch_1500").explain(analyze=True, costs=False)
    assert dict(charge_sums("sandbox_a", "ch_1500")) == {"authorize": 1000}
    assert "Rows Removed by Filter" not in plan, plan
