"""Which gateways can take a payment at all, and why the others cannot.

Checks, in order (the first that fails is the reason): registered adapter
(``unknown_gateway``), configuration (``not_configured``), ``disabled``, the payment's mode
(``sandbox_in_live_mode``: a live payment never reaches a sandbox; ``live_gateway_in_test_mode``:
a test payment reaches only sandboxes),
``currency_not_supported``, ``method_not_supported``, ``country_not_supported`` (a gateway
limited to some countries refuses a payment whose country is unknown), ``amount_out_of_range``,
then whether it can take a call now: ``breaker_open``, ``bulkhead_full`` (or ``unavailable``
when the caller's own ``available`` check said no).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateways.health import gateway_available, gateways_health
from gateways.registry import gateway_names
from routing.types import GatewaySpec, PaymentFacts

UNKNOWN_GATEWAY = "unknown_gateway"
NOT_CONFIGURED = "not_configured"
DISABLED = "disabled"
CURRENCY_NOT_SUPPORTED = "currency_not_supported"
METHOD_NOT_SUPPORTED = "method_not_supported"
COUNTRY_NOT_SUPPORTED = "country_not_supported"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
BREAKER_OPEN = "breaker_open"
BULKHEAD_FULL = "bulkhead_full"
UNAVAILABLE = "unavailable"
SANDBOX_IN_LIVE_MODE = "sandbox_in_live_mode"
LIVE_GATEWAY_IN_TEST_MODE = "live_gateway_in_test_mode"

# ``GatewayConfig.adapter`` of the sandbox accounts: test payments route only to these, live
# payments never do.
SANDBOX_ADAPTER = "sandbox"


@dataclass(frozen=True, slots=True)
class Filtered:
    """The gateways that passed (in the given order), those that did not with their reason,
    and the breaker state read for each that passed (empty when the caller checked)."""

    passed: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    breaker_states: Mapping[str, str]


def static_reason(facts: PaymentFacts, spec: GatewaySpec | None) -> str | None:
    """Why the configuration ``spec`` cannot take the payment, or None when it can."""
    if spec is None:
        return NOT_CONFIGURED
    if not spec.enabled:
        return DISABLED
    if facts.livemode and spec.adapter == SANDBOX_ADAPTER:
        return SANDBOX_IN_LIVE_MODE
    if not facts.livemode and spec.adapter != SANDBOX_ADAPTER:
        return LIVE_GATEWAY_IN_TEST_MODE
    if spec.currencies and facts.currency.upper() not in spec.currencies:
        return CURRENCY_NOT_SUPPORTED
    if spec.methods and (facts.method or "").lower() not in spec.methods:
        return METHOD_NOT_SUPPORTED
    if spec.countries and (facts.country or "").upper() not in spec.countries:
        return COUNTRY_NOT_SUPPORTED
    if (spec.min_amount is not None and facts.amount < spec.min_amount) or (
        spec.max_amount is not None and facts.amount > spec.max_amount
    ):
        return AMOUNT_OUT_OF_RANGE
    return None


def live_reasons(gateways: Sequence[str]) -> dict[str, tuple[str | None, str]]:
    """For each gateway, (reason or None, breaker state) from its breaker and bulkhead, read
    in one Redis round trip (``gateways/health.py``)."""
    answers: dict[str, tuple[str | None, str]] = {}
    for name, health in gateways_health(gateways).items():
        if health.breaker_open:
            reason: str | None = BREAKER_OPEN
        elif health.bulkhead_full:
            reason = BULKHEAD_FULL
        else:
            reason = None
        answers[name] = (reason, str(health.breaker_state))
    return answers


def filter_gateways(
    *,
    facts: PaymentFacts | None,
    gateways: Sequence[str],
    specs: Mapping[str, GatewaySpec] | None,
    available: Callable[[str], bool] | None = None,
) -> Filtered:
    """Split ``gateways`` into those that can take the payment now and those that cannot.

    Without ``facts`` (or ``specs``) only registration and availability are checked.
    ``available`` replaces the breaker/bulkhead check (None, or ``gateway_available`` itself
    when ``facts`` are given, means the built-in check, which also tells ``breaker_open`` from
    ``bulkhead_full``).
    """
    known = set(gateway_names())
    # The built-in check tells breaker_open from bulkhead_full in one round trip; the old call
    # without facts keeps its callable and its single ``unavailable`` reason.
    own_check = available is None or (available is gateway_available and facts is not None)
    passed: list[str] = []
    excluded: list[tuple[str, str]] = []
    states: dict[str, str] = {}
    reasons: dict[str, str | None] = {}
    for name in dict.fromkeys(gateways):
        reason = None if name in known else UNKNOWN_GATEWAY
        if reason is None and facts is not None and specs is not None:
            reason = static_reason(facts, specs.get(name))
        if reason is None and not own_check and available is not None and not available(name):
            reason = UNAVAILABLE
        reasons[name] = reason
    if own_check:
        live = live_reasons([n for n, r in reasons.items() if r is None])
        for name, (reason, state) in live.items():
            reasons[name] = reason
            if reason is None:
                states[name] = state
    for name, reason in reasons.items():
        if reason is None:
            passed.append(name)
        else:
            excluded.append((name, reason))
    return Filtered(passed=tuple(passed), excluded=tuple(excluded), breaker_states=states)
