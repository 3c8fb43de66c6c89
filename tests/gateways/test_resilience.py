"""call_gateway: breaker, bulkhead, hard timeout and breaker feedback around every call.

A fake adapter stands for a remote gateway (its answers, delays and failures are chosen per
test); Redis and, for the sandbox tests, PostgreSQL are real.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import pytest
from django_redis import get_redis_connection
from pytest_django import Settings

from gateways.base import (
    CaptureRequest,
    ChargeRequest,
    GatewayAdapter,
    GatewayResult,
    Operation,
    Outcome,
    RefundRequest,
    UnknownGateway,
    VoidRequest,
)
from gateways.breaker import BreakerState, breaker_for
from gateways.bulkhead import bulkhead_for
from gateways.chaos import ChaosConfig, clear_chaos, set_chaos
from gateways.registry import register, unregister
from gateways.resilience import NOT_SENT_CODES, call_gateway
from gateways.sandbox.adapter import SandboxGateway
from gateways.sandbox.ledger import charge_count, ledger_entries
from tests.gateways.factories import ChargeRequestFactory
from tests.waiting import wait_until

Behaviour = Callable[[str, str], GatewayResult]

# Real threads need committed data; the flush after each test is limited to this app's tables.
racing_db = pytest.mark.django_db(transaction=True, available_apps=["gateways"])


class FakeGateway:
    """A gateway adapter whose every call runs ``behaviour(operation, reference)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []
        self.behaviour: Behaviour = answering(Outcome.SUCCEEDED)

    def _call(self, operation: str, reference: str) -> GatewayResult:
        self.calls.append((operation, reference))
        return self.behaviour(operation, reference)

    def authorize(self, request: ChargeRequest) -> GatewayResult:
        return self._call("authorize", request.reference)

    def capture(self, request: CaptureRequest) -> GatewayResult:
        return self._call("capture", request.reference)

    def void(self, request: VoidRequest) -> GatewayResult:
        return self._call("void", request.reference)

    def refund(self, request: RefundRequest) -> GatewayResult:
        return self._call("refund", request.reference)

    def lookup(self, reference: str, operation: str = "authorize") -> GatewayResult:
        return self._call("lookup", reference)


def answering(outcome: Outcome, *, after: float = 0.0) -> Behaviour:
    def behaviour(operation: str, reference: str) -> GatewayResult:
        time.sleep(after)
        return GatewayResult(
            outcome=outcome, gateway="fake", operation=operation, reference=reference
        )

    return behaviour


def raising(error: Exception) -> Behaviour:
    def behaviour(operation: str, reference: str) -> GatewayResult:
        raise error

    return behaviour


def _forget(name: str) -> None:
    redis = get_redis_connection("default")
    for key in redis.scan_iter(match=f"aegispay:*{name}*"):
        redis.delete(key)


@pytest.fixture(autouse=True)
def _limits(small_limits: None) -> None:
    """Every test here runs with the small limits of tests/gateways/conftest.py."""


@pytest.fixture
def fake() -> Iterator[FakeGateway]:
    """A fake gateway registered under a name no other test uses (its Redis state too)."""
    adapter = FakeGateway(f"fake-{uuid.uuid4().hex}")
    register(adapter)
    yield adapter
    unregister(adapter.name)
    _forget(adapter.name)


def authorize(gateway: str, *, timeout: float | None = None) -> GatewayResult:
    request = ChargeRequestFactory()
    return call_gateway(
        gateway,
        Operation.AUTHORIZE,
        lambda adapter: adapter.authorize(request),
        reference=request.reference,
        timeout=timeout,
    )


def lookup(gateway: str, reference: str, *, timeout: float | None = None) -> GatewayResult:
    return call_gateway(
        gateway,
        Operation.LOOKUP,
        lambda adapter: adapter.lookup(reference),
        reference=reference,
        timeout=timeout,
    )


CALLS: dict[str, Callable[[GatewayAdapter, str], GatewayResult]] = {
    "authorize": lambda gw, ref: gw.authorize(ChargeRequestFactory(reference=ref)),
    "capture": lambda gw, ref: gw.capture(CaptureRequest(ref, "ch_1", 100, "USD")),
    "void": lambda gw, ref: gw.void(VoidRequest(ref, "ch_1")),
    "refund": lambda gw, ref: gw.refund(RefundRequest(ref, "ch_1", 100, "USD")),
    "lookup": lambda gw, ref: gw.lookup(ref),
}


def call(gateway: str, operation: str, reference: str) -> GatewayResult:
    return call_gateway(
        gateway,
        operation,
        lambda adapter: CALLS[operation](adapter, reference),
        reference=reference,
    )


# --- the call goes through ---


def test_an_answer_comes_back_with_the_latency_measured_around_the_call(
    fake: FakeGateway,
) -> None:
    fake.behaviour = answering(Outcome.SUCCEEDED, after=0.05)

    result = authorize(fake.name)

    assert result.outcome is Outcome.SUCCEEDED
    assert 50 <= result.latency_ms < 2000
    assert len(fake.calls) == 1
    assert bulkhead_for(fake.name).in_use() == 0


MARKER: ContextVar[str] = ContextVar("marker", default="unset")


def test_the_call_runs_in_its_own_thread_with_the_callers_context(fake: FakeGateway) -> None:
    seen: list[tuple[str, str]] = []

    def behaviour(operation: str, reference: str) -> GatewayResult:
        seen.append((threading.current_thread().name, MARKER.get()))
        return answering(Outcome.SUCCEEDED)(operation, reference)

    fake.behaviour = behaviour
    token = MARKER.set("set-by-the-caller")

    authorize(fake.name)

    MARKER.reset(token)
    assert seen == [(f"gateway-{fake.name}-authorize", "set-by-the-caller")]


# --- the breaker in front ---


def test_an_open_breaker_refuses_without_calling_the_gateway(fake: FakeGateway) -> None:
    breaker = breaker_for(fake.name)
    for _ in range(4):
        breaker.record_failure()

    result = authorize(fake.name)

    assert (result.outcome, result.decline_code) == (Outcome.NOT_SENT, "circuit_open")
    assert (result.gateway, result.operation) == (fake.name, "authorize")
    assert result.decline_code in NOT_SENT_CODES
    assert fake.calls == []
    assert breaker.snapshot().calls == 4


def test_failing_answers_open_the_breaker(fake: FakeGateway) -> None:
    fake.behaviour = answering(Outcome.RETRYABLE_ERROR)

    outcomes = [authorize(fake.name).decline_code for _ in range(6)]

    assert outcomes == [None, None, None, None, "circuit_open", "circuit_open"]
    assert len(fake.calls) == 4
    assert breaker_for(fake.name).state() is BreakerState.OPEN


@pytest.mark.parametrize(
    ("outcome", "failures"),
    [
        (Outcome.SUCCEEDED, 0),
        (Outcome.DECLINED, 0),
        (Outcome.NOT_FOUND, 0),
        (Outcome.RETRYABLE_ERROR, 1),
        (Outcome.UNKNOWN, 1),
    ],
)
def test_outcomes_feed_the_breaker(fake: FakeGateway, outcome: Outcome, failures: int) -> None:
    fake.behaviour = answering(outcome)

    result = authorize(fake.name)

    assert result.outcome is outcome
    snapshot = breaker_for(fake.name).snapshot()
    assert (snapshot.calls, snapshot.failures) == (1, failures)


def test_a_half_open_breaker_closes_after_a_successful_trial(fake: FakeGateway) -> None:
    breaker = breaker_for(fake.name)
    for _ in range(4):
        breaker.record_failure()
    time.sleep(0.35)

    result = authorize(fake.name)

    assert result.outcome is Outcome.SUCCEEDED
    assert breaker.state() is BreakerState.CLOSED


# --- the bulkhead ---


def test_a_full_bulkhead_refuses_without_calling_the_gateway(fake: FakeGateway) -> None:
    bulkhead = bulkhead_for(fake.name)
    held = [bulkhead.acquire(), bulkhead.acquire()]

    result = authorize(fake.name)

    assert (result.outcome, result.decline_code) == (Outcome.NOT_SENT, "bulkhead_full")
    assert fake.calls == []
    assert result.decline_code in NOT_SENT_CODES
    assert breaker_for(fake.name).snapshot().calls == 0
    assert None not in held


def test_racing_calls_beyond_the_bulkhead_are_refused(fake: FakeGateway) -> None:
    fake.behaviour = answering(Outcome.SUCCEEDED, after=0.3)
    barrier = threading.Barrier(6)

    def race(_: int) -> str | None:
        barrier.wait(timeout=30)
        return authorize(fake.name).decline_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(race, range(6)))

    assert Counter(codes) == {None: 2, "bulkhead_full": 4}
    assert len(fake.calls) == 2


def test_a_half_open_trial_refused_by_the_bulkhead_is_given_back(fake: FakeGateway) -> None:
    breaker, bulkhead = breaker_for(fake.name), bulkhead_for(fake.name)
    for _ in range(4):
        breaker.record_failure()
    time.sleep(0.35)
    held = [bulkhead.acquire(), bulkhead.acquire()]

    refused = authorize(fake.name)

    assert refused.decline_code == "bulkhead_full"
    assert breaker.snapshot().half_open_trials == 0
    bulkhead.release(held[0])
    assert authorize(fake.name).outcome is Outcome.SUCCEEDED
    assert breaker.state() is BreakerState.CLOSED


# --- the hard timeout ---


def test_a_call_past_its_deadline_is_unknown_and_keeps_its_slot_until_it_ends(
    fake: FakeGateway,
) -> None:
    fake.behaviour = answering(Outcome.SUCCEEDED, after=0.6)
    bulkhead = bulkhead_for(fake.name)

    result = authorize(fake.name, timeout=0.1)

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    assert 100 <= result.latency_ms < 600
    assert len(fake.calls) == 1
    assert breaker_for(fake.name).snapshot().failures == 1
    # The gateway is still serving the abandoned call: it still holds its slot.
    assert bulkhead.in_use() == 1
    wait_until(lambda: bulkhead.in_use() == 0, timeout=5)


def test_the_default_deadline_comes_from_settings(fake: FakeGateway, settings: Settings) -> None:
    settings.GATEWAY_TIMEOUT_SECONDS = 0.1
    fake.behaviour = answering(Outcome.SUCCEEDED, after=0.4)

    result = authorize(fake.name)

    assert result.decline_code == "gateway_timeout"
    assert result.latency_ms < 400


def test_a_lookup_past_its_deadline_is_retryable(fake: FakeGateway) -> None:
    fake.behaviour = answering(Outcome.SUCCEEDED, after=0.4)

    result = lookup(fake.name, "att_1", timeout=0.1)

    assert (result.outcome, result.decline_code) == (Outcome.RETRYABLE_ERROR, "gateway_timeout")
    assert result.reference == "att_1"


# --- exceptions ---


@pytest.mark.parametrize(
    ("operation", "outcome"),
    [
        ("authorize", Outcome.UNKNOWN),
        ("capture", Outcome.UNKNOWN),
        ("void", Outcome.UNKNOWN),
        ("refund", Outcome.UNKNOWN),
        ("lookup", Outcome.RETRYABLE_ERROR),
    ],
)
def test_an_exception_after_sending_may_have_taken_the_operation(
    fake: FakeGateway, operation: str, outcome: Outcome
) -> None:
    fake.behaviour = raising(ConnectionResetError("connection reset by peer"))

    result = call(fake.name, operation, "ref_1")

    assert (result.outcome, result.decline_code) == (outcome, "gateway_exception")
    assert (result.operation, result.reference) == (operation, "ref_1")
    assert fake.calls == [(operation, "ref_1")]
    assert breaker_for(fake.name).snapshot().failures == 1
    assert bulkhead_for(fake.name).in_use() == 0


def test_the_adapters_own_timeout_is_a_gateway_timeout(fake: FakeGateway) -> None:
    fake.behaviour = raising(TimeoutError("read timed out"))

    result = authorize(fake.name, timeout=5)

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    assert result.latency_ms < 5000


def test_an_answer_that_is_not_a_gateway_result_counts_as_an_exception(fake: FakeGateway) -> None:
    def not_a_result(adapter: GatewayAdapter) -> Any:
        return "ok"

    result = call_gateway(fake.name, "void", not_a_result, reference="void_1")

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_exception")


def test_unknown_gateways_and_operations_raise_before_anything_is_sent(fake: FakeGateway) -> None:
    with pytest.raises(UnknownGateway):
        authorize(f"missing-{uuid.uuid4().hex}")
    with pytest.raises(ValueError):
        call_gateway(fake.name, "teleport", lambda adapter: adapter.lookup("x"), reference="x")
    assert fake.calls == []


# --- with the sandbox (real PostgreSQL, from the call thread) ---


@pytest.fixture
def sandbox() -> Iterator[SandboxGateway]:
    adapter = SandboxGateway(f"sbx-{uuid.uuid4().hex}", latency_ms=0)
    register(adapter)
    yield adapter
    unregister(adapter.name)
    clear_chaos(adapter.name)
    _forget(adapter.name)


@racing_db
def test_a_sandbox_charge_through_call_gateway(sandbox: SandboxGateway) -> None:
    request = ChargeRequestFactory()

    result = call_gateway(
        sandbox.name,
        Operation.AUTHORIZE,
        lambda adapter: adapter.authorize(request),
        reference=request.reference,
    )

    assert result.outcome is Outcome.SUCCEEDED
    assert charge_count(request.order_reference) == 1


@racing_db
def test_a_call_admitted_and_finished_in_one_round_trip_each(
    sandbox: SandboxGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the inline path the breaker's check and the bulkhead's slot are one script, and so
    are giving the slot back and feeding the breaker, and the sandbox's chaos config is read
    in the admission's script: two round trips to Redis (five, then three, before)."""
    from redis.connection import Connection

    def charge() -> GatewayResult:
        request = ChargeRequestFactory()
        return call_gateway(
            sandbox.name,
            Operation.AUTHORIZE,
            lambda adapter: adapter.authorize(request),
            reference=request.reference,
        )

    charge()  # Redis has loaded the scripts (a first EVALSHA of each is refused, then sent)
    sent: list[str] = []
    real_send = Connection.send_packed_command

    def send(self: Connection, command: object, check_health: bool = True) -> None:
        sent.append(repr(command))
        real_send(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", send)
    result = charge()
    monkeypatch.undo()

    assert result.outcome is Outcome.SUCCEEDED
    assert len(sent) == 2, sent
    assert bulkhead_for(sandbox.name).in_use() == 0
    assert breaker_for(sandbox.name).snapshot().calls == 2


@racing_db
def test_a_timed_out_sandbox_charge_completes_and_a_lookup_finds_it(
    sandbox: SandboxGateway,
) -> None:
    sandbox.latency_ms = 400
    request = ChargeRequestFactory()

    result = call_gateway(
        sandbox.name,
        Operation.AUTHORIZE,
        lambda adapter: adapter.authorize(request),
        reference=request.reference,
        timeout=0.1,
    )

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    wait_until(lambda: bulkhead_for(sandbox.name).in_use() == 0, timeout=10)
    assert charge_count(request.order_reference) == 1
    found = lookup(sandbox.name, request.reference)
    assert found.outcome is Outcome.SUCCEEDED
    assert charge_count(request.order_reference) == 1


@racing_db
def test_injected_faults_reach_the_caller_and_the_breaker(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(timeout_rate=1))
    timed_out = authorize(sandbox.name)
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))
    errored = authorize(sandbox.name)

    assert (timed_out.outcome, timed_out.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    assert (errored.outcome, errored.decline_code) == (Outcome.RETRYABLE_ERROR, "gateway_error")
    assert [entry.reference for entry in ledger_entries(gateway=sandbox.name)] == [
        timed_out.reference
    ]
    assert lookup(sandbox.name, timed_out.reference).outcome is Outcome.SUCCEEDED
    snapshot = breaker_for(sandbox.name).snapshot()
    assert (snapshot.calls, snapshot.failures) == (3, 2)


@racing_db
def test_a_config_read_at_admission_is_the_one_the_call_meets(sandbox: SandboxGateway) -> None:
    """The sandbox's chaos config comes with the admission's script (``chaos_read``): switched
    on, the next call meets it; unreadable, the call runs without faults, as a config read by
    the sandbox itself does; switched off, the next call is clean again."""
    from gateways.chaos import chaos_key

    set_chaos(sandbox.name, ChaosConfig(decline_rate=1))
    assert authorize(sandbox.name).decline_code == "card_declined"
    get_redis_connection("default").set(chaos_key(sandbox.name), b"{not json")
    assert authorize(sandbox.name).outcome is Outcome.SUCCEEDED
    clear_chaos(sandbox.name)
    assert authorize(sandbox.name).outcome is Outcome.SUCCEEDED
