"""Code of your own, registered in settings, run at fixed points with a time limit and isolated
from failures: risk checks (``RISK_CHECKS``, payments/risk.py), guards before a merchant's or
staff's command (``PAYMENT_GUARDS``) and listeners after an event commits
(``PAYMENT_LISTENERS``).

Every hook runs in a small thread pool of its own and is waited for at most its time limit.
A hook that raises or runs over is logged and counted in
``aegispay_hook_failures_total{kind, hook, outcome}`` and then counts as having no opinion
(a guard lets the command through, a listener is skipped, a risk check counts as
``RISK_CHECK_FAILURE``): a broken hook never breaks a payment. A hook that runs over keeps
its thread until it returns; the pool's other threads go on. Hooks receive plain values
(frozen dataclasses, dicts), never a model, and should not use the database: they run on
another thread, outside the payment's transaction, and the thread's connections are closed
after each call.

A guard is ``guard(command: str, payment: PaymentSnapshot) -> str | None``: a string refuses
the command with that reason (``422 command_refused``), ``None`` lets it through. Commands are
``capture``, ``cancel``, ``refund``, ``retry`` and ``update``: those a merchant or staff ask
for. Transitions that record what a gateway did (authorized, captured, refunded...) are never
guarded: refusing them would lose track of money that moved. A listener is
``listener(event: dict) -> None``, called with the event object (as the API and webhooks show
it) once the transaction that appended it has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils.module_loading import import_string
from prometheus_client import Counter

from .errors import PaymentError
from .models import Payment

logger = logging.getLogger(__name__)

HOOK_FAILURES = Counter(
    "aegispay_hook_failures",
    "Hooks of your own (risk checks, guards, listeners) that raised or ran over their limit",
    ["kind", "hook", "outcome"],
)

GUARDED_COMMANDS = frozenset({"capture", "cancel", "refund", "retry", "update"})

_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aegispay-hook")


class CommandRefused(PaymentError):
    code = "command_refused"
    status = 422


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """What one hook answered, or why it did not: ``failure`` is ``timeout`` or ``error``."""

    hook: str
    value: Any = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentSnapshot:
    """A payment as a guard sees it: plain values, read before the command changes anything."""

    id: str
    merchant_id: str
    livemode: bool
    status: str
    amount: int
    currency: str
    amount_authorized: int
    amount_captured: int
    amount_refunded: int
    metadata: Mapping[str, str]
    version: int

    @classmethod
    def of(cls, payment: Payment) -> PaymentSnapshot:
        return cls(
            id=payment.id,
            merchant_id=payment.merchant_id,
            livemode=payment.livemode,
            status=payment.status,
            amount=payment.amount,
            currency=payment.currency,
            amount_authorized=payment.amount_authorized,
            amount_captured=payment.amount_captured,
            amount_refunded=payment.amount_refunded,
            metadata=dict(payment.metadata),
            version=payment.version,
        )


@lru_cache(maxsize=32)
def _loaded(paths: tuple[str, ...]) -> tuple[tuple[str, Callable[..., Any]], ...]:
    # Imported once per list of paths; a path that does not import stops at first use, loudly.
    return tuple((path, import_string(path)) for path in paths)


def hooks(setting: str) -> tuple[tuple[str, Callable[..., Any]], ...]:
    """The callables a setting lists, by dotted path, imported once."""
    return _loaded(tuple(getattr(settings, setting, ()) or ()))


def _call(hook: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return hook(*args)
    finally:
        connections.close_all()  # this pool thread's own connections, if the hook opened any


def run_isolated(
    kind: str, name: str, hook: Callable[..., Any], *args: Any, timeout: float
) -> HookOutcome:
    """Run ``hook(*args)`` on the hook pool and wait at most ``timeout`` seconds for it."""
    future = _POOL.submit(_call, hook, args)
    try:
        return HookOutcome(hook=name, value=future.result(timeout=timeout))
    except FutureTimeout:
        outcome = "timeout"
        logger.warning("%s hook %s ran over its %.3f s limit", kind, name, timeout)
    except Exception:
        outcome = "error"
        logger.exception("%s hook %s failed", kind, name)
    HOOK_FAILURES.labels(kind=kind, hook=name, outcome=outcome).inc()
    return HookOutcome(hook=name, failure=outcome)


def guard_command(command: str, payment: Payment) -> None:
    """Run the ``PAYMENT_GUARDS`` before ``command`` on ``payment``; the first that answers a
    reason refuses it (``CommandRefused``). Call before the command writes anything."""
    if command not in GUARDED_COMMANDS:
        raise ValueError(f"not a guarded command: {command}")
    registered = hooks("PAYMENT_GUARDS")
    if not registered:
        return
    snapshot = PaymentSnapshot.of(payment)
    for name, guard in registered:
        outcome = run_isolated(
            "guard", name, guard, command, snapshot, timeout=settings.PAYMENT_HOOK_TIMEOUT_SECONDS
        )
        if isinstance(outcome.value, str) and outcome.value:
            raise CommandRefused(f"{command} refused: {outcome.value}")


def notify_after_commit(event: Mapping[str, Any]) -> None:
    """Hand ``event`` to the ``PAYMENT_LISTENERS`` once the current transaction commits (never
    if it rolls back). Nothing is scheduled when none is registered."""
    registered = hooks("PAYMENT_LISTENERS")
    if not registered:
        return
    payload = dict(event)

    def notify() -> None:
        for name, listener in registered:
            run_isolated(
                "listener",
                name,
                listener,
                payload,
                timeout=settings.PAYMENT_HOOK_TIMEOUT_SECONDS,
            )

    transaction.on_commit(notify, robust=True)
