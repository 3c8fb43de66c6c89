"""The gateway port: the plain values every gateway adapter takes and returns.

Nothing here knows about payments, routing or the outbox. Callers build a request dataclass,
hand it to a :class:`GatewayAdapter` and get back a :class:`GatewayResult`; no ORM object ever
crosses this boundary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Outcome(StrEnum):
    """What a gateway call achieved, as far as the caller can know (docs/ARCHITECTURE.md).

    Every call ends in exactly one of: NOT_SENT (nothing could reach the gateway), SUCCEEDED
    (the gateway took it), DECLINED or RETRYABLE_ERROR (the gateway's definitive answer that
    nothing was taken; the latter may succeed if asked again), UNKNOWN (sent, or maybe sent,
    and no definitive answer). Lookups answer SUCCEEDED/DECLINED for what they find, or
    NOT_FOUND.
    """

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    RETRYABLE_ERROR = "retryable_error"
    # Refused before any byte could reach the gateway (breaker open, bulkhead full, Redis
    # unreadable, a local error before the request was written): certainly nothing taken by
    # *this* call. It says nothing of an earlier call with the same reference.
    NOT_SENT = "not_sent"
    # The request may or may not have been taken (e.g. a timeout after it was sent): never
    # answer it by charging elsewhere; look the reference up or retry it on the same gateway.
    UNKNOWN = "unknown"
    # Only from lookups: the gateway has no record of that reference.
    NOT_FOUND = "not_found"


class Operation(StrEnum):
    """The gateway operation a :class:`GatewayResult` answers."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    LOOKUP = "lookup"


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """Authorise ``amount`` minor units of ``currency`` on a card token.

    ``reference`` is the attempt's idempotency reference (the same reference never charges
    twice); ``order_reference`` is the payment id, which the gateway sees as its order id.
    With ``capture=True`` the gateway authorises and captures in one call.
    """

    reference: str
    order_reference: str
    amount: int
    currency: str
    token: str
    capture: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A private copy: a caller mutating its dict later cannot change a frozen request.
        object.__setattr__(self, "metadata", dict(self.metadata))


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """Capture ``amount`` of authorisation ``gateway_reference``; idempotent by ``reference``."""

    reference: str
    gateway_reference: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class VoidRequest:
    """Release the uncaptured authorisation ``gateway_reference``; idempotent by ``reference``."""

    reference: str
    gateway_reference: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Refund ``amount`` of the captured charge ``gateway_reference``.

    ``reference`` is the refund id and the idempotency reference of the refund.
    """

    reference: str
    gateway_reference: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """The answer to one gateway call.

    ``reference`` echoes the request's reference; ``gateway_reference`` is the gateway's own id
    of the charge (for capture, void and refund: the charge they apply to). ``decline_code`` is a
    stable machine-readable code for declines and errors; ``latency_ms`` is the wall time of the
    call.
    """

    outcome: Outcome
    gateway: str
    operation: str
    reference: str
    gateway_reference: str | None = None
    amount: int = 0
    currency: str = ""
    decline_code: str | None = None
    message: str = ""
    latency_ms: int = 0
    brand: str | None = None
    last4: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the gateway took the operation."""
        return self.outcome is Outcome.SUCCEEDED

    @property
    def declined(self) -> bool:
        """True when the gateway refused the operation; retrying it would not help."""
        return self.outcome is Outcome.DECLINED

    @property
    def retryable(self) -> bool:
        """True when the gateway failed without taking the operation and a retry may succeed."""
        return self.outcome is Outcome.RETRYABLE_ERROR

    @property
    def not_sent(self) -> bool:
        """True when this call never reached the gateway (see ``Outcome.NOT_SENT``)."""
        return self.outcome is Outcome.NOT_SENT

    @property
    def definitive(self) -> bool:
        """True when the gateway itself answered what became of the reference: taken
        (SUCCEEDED), refused (DECLINED), or, for a lookup, no record of it (NOT_FOUND)."""
        return self.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.NOT_FOUND)

    @property
    def is_unknown(self) -> bool:
        """True when the operation may or may not have been taken (look it up before acting)."""
        return self.outcome is Outcome.UNKNOWN


# When ``call_gateway`` runs an adapter in the caller's own thread (an adapter whose
# ``enforces_deadline`` is true), the moment (``time.monotonic()``) by which the call must have
# answered. Such an adapter bounds what it does by it, as an SDK bounds a request by its HTTP
# client's timeout: it never waits past it. ``None`` outside such a call.
CALL_DEADLINE: ContextVar[float | None] = ContextVar("gateway_call_deadline", default=None)


def seconds_left() -> float | None:
    """The time left before ``CALL_DEADLINE`` (never below 0), or ``None`` when none is set."""
    deadline = CALL_DEADLINE.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@runtime_checkable
class GatewayAdapter(Protocol):
    """What every gateway adapter offers. Every method is idempotent by its request's reference.

    Adapters report failures as :class:`GatewayResult` outcomes, not exceptions: a decline, a
    retryable error and an unknown outcome are all ordinary answers.
    """

    name: str

    def authorize(self, request: ChargeRequest) -> GatewayResult:
        """Authorise (and with ``request.capture`` also capture) a charge."""
        ...

    def capture(self, request: CaptureRequest) -> GatewayResult:
        """Capture part or all of an authorisation."""
        ...

    def void(self, request: VoidRequest) -> GatewayResult:
        """Release an uncaptured authorisation."""
        ...

    def refund(self, request: RefundRequest) -> GatewayResult:
        """Refund part or all of a captured charge."""
        ...

    def lookup(self, reference: str, operation: str = "authorize") -> GatewayResult:
        """What became of an earlier ``operation`` (authorize, capture, void or refund) sent
        with ``reference``.

        SUCCEEDED with ``gateway_reference``/``amount`` when it was taken, DECLINED when it
        was refused, NOT_FOUND when the gateway has positively no record of it. Changes
        nothing at the gateway.
        """
        ...


class GatewayError(Exception):
    """Base of the errors raised by the gateway port (not of gateway outcomes)."""


class UnknownGateway(GatewayError):
    """No adapter is registered under the requested gateway account name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no gateway registered under the name {name!r}")
        self.name = name
