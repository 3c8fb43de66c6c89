"""Fault injection: seeded decisions, config shared through Redis, and the sandbox's faults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from gateways.base import Outcome
from gateways.chaos import ChaosConfig, Fault, clear_chaos, decide, get_chaos, set_chaos
from gateways.models import SandboxOperation
from gateways.sandbox.adapter import SandboxGateway
from gateways.sandbox.ledger import ledger_entries
from tests.gateways.factories import (
    CaptureRequestFactory,
    ChargeRequestFactory,
    RefundRequestFactory,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateway_name() -> Iterator[str]:
    """A gateway account name no other test uses; its chaos config is cleared afterwards."""
    value = f"chaos-{uuid.uuid4().hex}"
    yield value
    clear_chaos(value)


@pytest.fixture
def sandbox(gateway_name: str) -> SandboxGateway:
    return SandboxGateway(gateway_name, latency_ms=0)


def decisions(config: ChaosConfig, count: int, *, gateway: str = "sandbox_a") -> list[Fault]:
    return [
        decide(config, gateway=gateway, operation="authorize", reference=f"att_{i}")
        for i in range(count)
    ]


# --- the config ---


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": -0.1},
        {"error_rate": 1.1},
        {"timeout_rate": 2},
        {"error_rate": 0.6, "timeout_rate": 0.5},
        {"error_rate": float("nan")},
        {"error_rate": "0.5"},
        {"added_latency_ms": -1},
        {"added_latency_ms": 1.5},
        {"seed": "7"},
    ],
)
def test_invalid_configs_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ChaosConfig(**fields)


def test_a_config_round_trips_through_json() -> None:
    config = ChaosConfig(error_rate=0.5, timeout_rate=0.5, added_latency_ms=20, seed=42)

    assert ChaosConfig.from_json(config.to_json()) == config


# --- decisions ---


def test_decisions_are_deterministic_per_seed() -> None:
    config = ChaosConfig(error_rate=0.3, timeout_rate=0.3, seed=7)

    first = decisions(config, 300)

    assert decisions(config, 300) == first
    assert decisions(ChaosConfig(error_rate=0.3, timeout_rate=0.3, seed=8), 300) != first
    assert decisions(config, 300, gateway="sandbox_b") != first
    assert set(first) == {Fault.NONE, Fault.ERROR, Fault.TIMEOUT}


def test_fault_rates_hold_over_two_thousand_references() -> None:
    config = ChaosConfig(error_rate=0.2, timeout_rate=0.1, seed=1)

    counts = Counter(decisions(config, 2000))

    assert abs(counts[Fault.ERROR] / 2000 - 0.2) < 0.03
    assert abs(counts[Fault.TIMEOUT] / 2000 - 0.1) < 0.03
    assert abs(counts[Fault.NONE] / 2000 - 0.7) < 0.03


@pytest.mark.parametrize(
    ("config", "fault"),
    [
        (ChaosConfig(), Fault.NONE),
        (ChaosConfig(error_rate=1), Fault.ERROR),
        (ChaosConfig(timeout_rate=1), Fault.TIMEOUT),
    ],
)
def test_extreme_rates_always_or_never_fault(config: ChaosConfig, fault: Fault) -> None:
    assert set(decisions(config, 500)) == {fault}


# --- stored in Redis ---


def test_set_get_and_clear(gateway_name: str) -> None:
    other = f"{gateway_name}-other"
    config = ChaosConfig(error_rate=0.25, seed=3)
    assert get_chaos(gateway_name) is None

    set_chaos(gateway_name, config)
    set_chaos(other, ChaosConfig(timeout_rate=1))

    assert get_chaos(gateway_name) == config
    clear_chaos(gateway_name)
    assert get_chaos(gateway_name) is None
    assert get_chaos(other) == ChaosConfig(timeout_rate=1)
    clear_chaos()
    assert get_chaos(other) is None


def test_faults_can_switch_themselves_off(gateway_name: str) -> None:
    set_chaos(gateway_name, ChaosConfig(error_rate=1), ttl_seconds=0.2)
    assert get_chaos(gateway_name) == ChaosConfig(error_rate=1)

    time.sleep(0.3)

    assert get_chaos(gateway_name) is None


# Runs in a second Python process: prints the config of argv[1], sets one for argv[2].
OTHER_PROCESS = """
import sys
import django

django.setup()
from gateways.chaos import ChaosConfig, get_chaos, set_chaos

print(get_chaos(sys.argv[1]).to_json())
set_chaos(sys.argv[2], ChaosConfig(timeout_rate=0.4, added_latency_ms=5, seed=9))
"""


def test_configs_are_seen_by_another_process(gateway_name: str) -> None:
    set_here, set_there = f"{gateway_name}-here", f"{gateway_name}-there"
    config = ChaosConfig(error_rate=0.2, timeout_rate=0.1, added_latency_ms=3, seed=11)
    set_chaos(set_here, config)

    completed = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, set_here, set_there],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "aegispay.settings",
            "REDIS_URL": django_settings.REDIS_URL,
        },
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert ChaosConfig.from_json(completed.stdout.strip()) == config
    assert get_chaos(set_there) == ChaosConfig(timeout_rate=0.4, added_latency_ms=5, seed=9)
    clear_chaos(set_here)
    clear_chaos(set_there)


# --- the sandbox under chaos ---


@pytest.mark.django_db
def test_an_injected_error_charges_nothing(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))
    request = ChargeRequestFactory()

    result = sandbox.authorize(request)

    assert (result.outcome, result.decline_code) == (Outcome.RETRYABLE_ERROR, "gateway_error")
    assert result.gateway_reference is None
    assert ledger_entries(gateway=sandbox.name) == []
    assert sandbox.lookup(request.reference).outcome is Outcome.NOT_FOUND


@pytest.mark.django_db
def test_an_injected_decline_charges_nothing(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(decline_rate=1))
    request = ChargeRequestFactory()

    result = sandbox.authorize(request)

    assert (result.outcome, result.decline_code) == (Outcome.DECLINED, "card_declined")
    assert ledger_entries(gateway=sandbox.name) == []


def test_decline_rates_hold_over_two_thousand_references() -> None:
    config = ChaosConfig(error_rate=0.1, decline_rate=0.3, seed=3)
    faults = [
        decide(config, gateway="g", operation="authorize", reference=f"r{i}") for i in range(2000)
    ]
    assert abs(faults.count(Fault.DECLINE) / 2000 - 0.3) < 0.04
    assert abs(faults.count(Fault.ERROR) / 2000 - 0.1) < 0.03


@pytest.mark.django_db
def test_only_the_first_call_with_a_reference_meets_a_fault(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))
    request = ChargeRequestFactory()
    assert sandbox.authorize(request).outcome is Outcome.RETRYABLE_ERROR

    again = sandbox.authorize(request)

    assert again.outcome is Outcome.SUCCEEDED
    assert len(ledger_entries(gateway=sandbox.name)) == 1


@pytest.mark.django_db
def test_an_injected_timeout_charges_once_and_a_lookup_finds_it(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(timeout_rate=1))
    request = ChargeRequestFactory(amount=1234)

    result = sandbox.authorize(request)

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    assert result.gateway_reference is None
    (entry,) = ledger_entries(gateway=sandbox.name)
    assert (entry.operation, entry.reference, entry.amount) == (
        "authorize",
        request.reference,
        1234,
    )
    found = sandbox.lookup(request.reference)
    assert (found.outcome, found.gateway_reference, found.amount) == (
        Outcome.SUCCEEDED,
        entry.gateway_reference,
        1234,
    )
    resent = sandbox.authorize(request)
    assert (resent.outcome, resent.gateway_reference) == (
        Outcome.SUCCEEDED,
        entry.gateway_reference,
    )
    assert len(ledger_entries(gateway=sandbox.name)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "outcome", "code", "charges"),
    [
        ("tok_chargeDeclined", Outcome.DECLINED, "card_declined", 0),
        ("tok_insufficientFunds", Outcome.DECLINED, "insufficient_funds", 0),
        ("tok_processingError", Outcome.RETRYABLE_ERROR, "processing_error", 0),
        ("tok_timeout", Outcome.UNKNOWN, "gateway_timeout", 1),
    ],
)
def test_test_tokens_keep_their_own_behaviour(
    sandbox: SandboxGateway, token: str, outcome: Outcome, code: str, charges: int
) -> None:
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))

    result = sandbox.authorize(ChargeRequestFactory(token=token))

    assert (result.outcome, result.decline_code) == (outcome, code)
    assert len(ledger_entries(gateway=sandbox.name)) == charges


@pytest.mark.django_db
def test_added_latency_is_slept_on_every_call(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(added_latency_ms=120))
    request = ChargeRequestFactory()

    charged = sandbox.authorize(request)
    looked_up = sandbox.lookup(request.reference)

    assert charged.outcome is Outcome.SUCCEEDED
    assert charged.latency_ms >= 120
    assert looked_up.latency_ms >= 120


@pytest.mark.django_db
def test_the_sandbox_follows_the_seeded_decisions(sandbox: SandboxGateway) -> None:
    config = ChaosConfig(error_rate=0.5, seed=3)
    set_chaos(sandbox.name, config)
    requests = [ChargeRequestFactory() for _ in range(30)]
    expected_outcome = {Fault.ERROR: Outcome.RETRYABLE_ERROR, Fault.NONE: Outcome.SUCCEEDED}

    outcomes = [sandbox.authorize(request).outcome for request in requests]

    assert outcomes == [
        expected_outcome[
            decide(config, gateway=sandbox.name, operation="authorize", reference=r.reference)
        ]
        for r in requests
    ]
    assert set(outcomes) == {Outcome.RETRYABLE_ERROR, Outcome.SUCCEEDED}


@pytest.mark.django_db
def test_an_injected_capture_error_captures_nothing(sandbox: SandboxGateway) -> None:
    charge = sandbox.authorize(ChargeRequestFactory())
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))
    request = CaptureRequestFactory(gateway_reference=charge.gateway_reference, amount=500)

    result = sandbox.capture(request)

    assert (result.outcome, result.decline_code) == (Outcome.RETRYABLE_ERROR, "gateway_error")
    assert ledger_entries(gateway=sandbox.name, operation=SandboxOperation.CAPTURE) == []
    assert sandbox.capture(request).outcome is Outcome.SUCCEEDED
    assert len(ledger_entries(gateway=sandbox.name, operation=SandboxOperation.CAPTURE)) == 1


@pytest.mark.django_db
def test_an_injected_refund_timeout_refunds_once(sandbox: SandboxGateway) -> None:
    charge = sandbox.authorize(ChargeRequestFactory(capture=True))
    set_chaos(sandbox.name, ChaosConfig(timeout_rate=1))
    request = RefundRequestFactory(gateway_reference=charge.gateway_reference, amount=700)

    result = sandbox.refund(request)

    assert (result.outcome, result.decline_code) == (Outcome.UNKNOWN, "gateway_timeout")
    assert len(ledger_entries(gateway=sandbox.name, operation=SandboxOperation.REFUND)) == 1
    resent = sandbox.refund(request)
    assert (resent.outcome, resent.amount) == (Outcome.SUCCEEDED, 700)
    assert len(ledger_entries(gateway=sandbox.name, operation=SandboxOperation.REFUND)) == 1


@pytest.mark.django_db
def test_faults_are_off_once_cleared(sandbox: SandboxGateway) -> None:
    set_chaos(sandbox.name, ChaosConfig(error_rate=1))
    clear_chaos(sandbox.name)

    result = sandbox.authorize(ChargeRequestFactory())

    assert result.outcome is Outcome.SUCCEEDED
