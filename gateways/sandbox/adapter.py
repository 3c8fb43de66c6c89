"""The sandbox adapter, ``SandboxGateway`` (the package's docstring says how it behaves)."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Sum
from redis.exceptions import RedisError

from common.db import bound_cursor
from common.rows import Compiled, insert, insert_statement, mark_saved
from gateways.base import (
    CaptureRequest,
    ChargeRequest,
    GatewayResult,
    Operation,
    Outcome,
    RefundRequest,
    VoidRequest,
    seconds_left,
)
from gateways.chaos import ChaosConfig, Fault, decide, get_chaos
from gateways.models import SandboxLedgerEntry, SandboxOperation, SandboxRequest
from gateways.sandbox.tokens import (
    AMOUNT_EXCEEDS_AUTHORIZED,
    AMOUNT_EXCEEDS_CAPTURED,
    AMOUNT_INVALID,
    AUTHORIZATION_VOIDED,
    CARD_DECLINED,
    CARDS,
    CHARGE_ALREADY_CAPTURED,
    CHARGE_NOT_FOUND,
    CURRENCY_INVALID,
    CURRENCY_MISMATCH,
    DECLINING_TOKENS,
    GATEWAY_ERROR,
    GATEWAY_TIMEOUT,
    IDEMPOTENCY_KEY_REUSED,
    INVALID_TOKEN,
    MESSAGES,
    PROCESSING_ERROR,
    PROCESSING_ERROR_FAILURES,
    Card,
    SandboxToken,
)

logger = logging.getLogger(__name__)


# First key of the advisory locks the sandbox takes (the second is a hash of the order).
_LOCK_NAMESPACE = 0x5A4D


@dataclass(frozen=True, slots=True)
class _ChargeTotals:
    captured: int
    refunded: int
    voided: bool


_Refusal = Callable[[SandboxLedgerEntry, _ChargeTotals], str | None]

# The tokens whose answer depends on how many authorize calls their order had before.
_COUNTED_TOKENS = frozenset({SandboxToken.PROCESSING_ERROR, SandboxToken.TIMEOUT})

# One ledger row unless its (gateway, operation, reference) has one already: one statement,
# where get_or_create takes four inside a transaction (read, savepoint, insert, release).
_LEDGER_CONFLICT = " ON CONFLICT (gateway, operation, reference) DO NOTHING RETURNING id"


# The ledger reads of every call, compiled once per process (common/rows.py; issue 13): an
# operation's row by its reference, and a charge's authorisation, locked, by its reference.
_ENTRY: Compiled[SandboxLedgerEntry] = Compiled(
    lambda gateway, operation, reference: SandboxLedgerEntry.objects.filter(
        gateway=gateway, operation=operation, reference=reference
    ).order_by("pk")[:1]
)
_CHARGE_LOCKED: Compiled[SandboxLedgerEntry] = Compiled(
    lambda gateway, gateway_reference: (
        SandboxLedgerEntry.objects.select_for_update()
        .filter(
            gateway=gateway,
            operation=SandboxOperation.AUTHORIZE,
            gateway_reference=gateway_reference,
        )
        .order_by("pk")[:1]
    )
)


def charge_sums(gateway: str, gateway_reference: str) -> QuerySet[Any, tuple[str, int]]:
    """``(operation, total amount)`` of every ledger row of one charge."""
    return (
        SandboxLedgerEntry.objects.filter(gateway=gateway, gateway_reference=gateway_reference)
        .order_by()
        .values("operation")
        .annotate(total=Sum("amount"))
        .values_list("operation", "total")
    )


_SUMS: Compiled[SandboxLedgerEntry] = Compiled(charge_sums)  # compiled once per process


class SandboxGateway:
    """One sandbox gateway account. Two accounts with different names keep separate ledgers.

    ``latency_ms`` overrides ``settings.SANDBOX_LATENCY_MS`` (read at each call) as the
    simulated network latency slept on every call.
    """

    # Its calls never wait past the caller's deadline (``gateways.base.CALL_DEADLINE``: the
    # simulated latency is cut at it), so ``call_gateway`` runs them in the caller's thread, on
    # the caller's database connection, instead of a thread and a connection of their own.
    enforces_deadline = True
    # Its calls read its chaos config (``_chaos``): ``call_gateway`` reads it in the round trip
    # that admits the call and hands it over (``gateways.chaos.chaos_read``), one fewer a call.
    reads_chaos = True

    def __init__(self, name: str, *, latency_ms: int | None = None) -> None:
        self.name = name
        self.latency_ms = latency_ms

    def __repr__(self) -> str:
        return f"SandboxGateway(name={self.name!r}, latency_ms={self.latency_ms!r})"

    # --- the GatewayAdapter protocol ---

    def authorize(self, request: ChargeRequest) -> GatewayResult:
        """Authorise a charge (and capture it too when ``request.capture``).

        Guarantees at most one charge per ``(account, reference)``: a reference already charged
        returns that charge (SUCCEEDED) and adds no ledger row, even when several processes
        race with it. The same reference with a different amount, currency, order or token is
        DECLINED with ``idempotency_key_reused``. Outcomes per token: see the module docstring.
        """
        started = time.monotonic()
        chaos = self._chaos()
        self._sleep(chaos)
        with transaction.atomic():
            # Serialises the calls of one order so that counting earlier calls is exact.
            self._lock("order", request.order_reference)
            earlier_calls = (
                SandboxRequest.objects.filter(
                    operation=SandboxOperation.AUTHORIZE, order_reference=request.order_reference
                ).count()
                if request.token in _COUNTED_TOKENS
                else 0  # no other token's answer depends on it
            )
            existing = self._entry(SandboxOperation.AUTHORIZE, request.reference)
            if existing is not None:
                result = self._replay_authorize(request, existing)
            else:
                fault = self._fault(chaos, SandboxOperation.AUTHORIZE, request.reference)
                result = self._new_authorize(request, earlier_calls, fault)
            self._log(
                SandboxOperation.AUTHORIZE,
                reference=request.reference,
                order_reference=request.order_reference,
                token=request.token,
                result=result,
            )
        return self._timed(result, started)

    def capture(self, request: CaptureRequest) -> GatewayResult:
        """Capture ``request.amount`` of an authorisation, idempotently by ``request.reference``.

        The total captured never exceeds the authorised amount and a voided authorisation is
        never captured (DECLINED ``amount_exceeds_authorized`` / ``authorization_voided``).
        """

        def refuse(charge: SandboxLedgerEntry, totals: _ChargeTotals) -> str | None:
            if totals.voided:
                return AUTHORIZATION_VOIDED
            if totals.captured + request.amount > charge.amount:
                return AMOUNT_EXCEEDS_AUTHORIZED
            return None

        return self._apply(
            SandboxOperation.CAPTURE,
            reference=request.reference,
            gateway_reference=request.gateway_reference,
            amount=request.amount,
            currency=request.currency,
            refuse=refuse,
        )

    def void(self, request: VoidRequest) -> GatewayResult:
        """Void an uncaptured authorisation, idempotently by ``request.reference``.

        A captured charge is DECLINED ``charge_already_captured``; an authorisation voided under
        another reference is DECLINED ``authorization_voided``.
        """

        def refuse(charge: SandboxLedgerEntry, totals: _ChargeTotals) -> str | None:
            if totals.voided:
                return AUTHORIZATION_VOIDED
            if totals.captured > 0:
                return CHARGE_ALREADY_CAPTURED
            return None

        return self._apply(
            SandboxOperation.VOID,
            reference=request.reference,
            gateway_reference=request.gateway_reference,
            amount=None,
            currency=None,
            refuse=refuse,
        )

    def refund(self, request: RefundRequest) -> GatewayResult:
        """Refund ``request.amount`` of a captured charge, idempotently by ``request.reference``.

        The total refunded never exceeds the total captured (DECLINED ``amount_exceeds_captured``),
        also when several refunds of one charge race: they are serialised on the charge's row.
        """

        def refuse(charge: SandboxLedgerEntry, totals: _ChargeTotals) -> str | None:
            if totals.refunded + request.amount > totals.captured:
                return AMOUNT_EXCEEDS_CAPTURED
            return None

        return self._apply(
            SandboxOperation.REFUND,
            reference=request.reference,
            gateway_reference=request.gateway_reference,
            amount=request.amount,
            currency=request.currency,
            refuse=refuse,
        )

    def lookup(self, reference: str, operation: str = "authorize") -> GatewayResult:
        """What became of an earlier ``operation`` sent with ``reference``, on this account.

        SUCCEEDED when it was taken (also one whose answer was lost): for an authorize with the
        charge's gateway_reference, amount and currency, for a capture, void or refund with
        its own amount and the charge's gateway_reference. DECLINED with the decline code when
        the latest call with that reference was declined; NOT_FOUND otherwise (nothing taken).
        """
        started = time.monotonic()
        self._sleep(self._chaos())
        kind = SandboxOperation(operation)
        with transaction.atomic():
            entry = self._entry(kind, reference)
            charge = entry
            if entry is not None and kind is not SandboxOperation.AUTHORIZE:
                charge = self._entry_by_charge(entry.gateway_reference) or entry
            last_call = (
                SandboxRequest.objects.filter(
                    gateway=self.name, operation=kind, reference=reference
                )
                .order_by("-id")
                .first()
            )
            if entry is not None and charge is not None:
                result = self._charge_result(Operation.LOOKUP, reference, entry, charge)
            elif last_call is not None and last_call.outcome == Outcome.DECLINED:
                result = self._refusal(Operation.LOOKUP, reference, last_call.decline_code)
            else:
                result = GatewayResult(
                    outcome=Outcome.NOT_FOUND,
                    gateway=self.name,
                    operation=Operation.LOOKUP,
                    reference=reference,
                    message=f"The gateway has no {kind.value} with that reference.",
                )
            self._log(
                SandboxOperation.LOOKUP,
                reference=reference,
                order_reference=entry.order_reference if entry else "",
                token=entry.token if entry else "",
                result=result,
            )
        return self._timed(result, started)

    def _entry_by_charge(self, gateway_reference: str) -> SandboxLedgerEntry | None:
        return SandboxLedgerEntry.objects.filter(
            gateway=self.name,
            operation=SandboxOperation.AUTHORIZE,
            gateway_reference=gateway_reference,
        ).first()

    # --- authorize ---

    def _new_authorize(
        self, request: ChargeRequest, earlier_calls: int, fault: Fault = Fault.NONE
    ) -> GatewayResult:
        op = Operation.AUTHORIZE
        if isinstance(request.amount, bool) or not isinstance(request.amount, int):
            return self._refusal(op, request.reference, AMOUNT_INVALID)
        if request.amount <= 0:
            return self._refusal(op, request.reference, AMOUNT_INVALID)
        if not (len(request.currency) == 3 and request.currency.isalpha()):
            return self._refusal(op, request.reference, CURRENCY_INVALID)
        if not request.currency.isupper():
            return self._refusal(op, request.reference, CURRENCY_INVALID)
        card = CARDS.get(request.token)
        if card is None:
            return self._refusal(op, request.reference, INVALID_TOKEN)
        if request.token in DECLINING_TOKENS:
            return self._refusal(op, request.reference, DECLINING_TOKENS[request.token], card=card)
        if (
            request.token == SandboxToken.PROCESSING_ERROR
            and earlier_calls < PROCESSING_ERROR_FAILURES
        ):
            return dataclasses.replace(
                self._refusal(op, request.reference, PROCESSING_ERROR, card=card),
                outcome=Outcome.RETRYABLE_ERROR,
            )
        token_timeout = request.token == SandboxToken.TIMEOUT and earlier_calls == 0
        if fault is Fault.ERROR and not token_timeout:
            return self._chaos_error(op, request.reference, card=card)
        if fault is Fault.DECLINE and not token_timeout:
            return self._refusal(op, request.reference, CARD_DECLINED, card=card)
        charge, created = self._record_charge(request)
        if not created:
            # Another process charged this reference between our check and our insert.
            return self._replay_authorize(request, charge)
        if token_timeout or fault is Fault.TIMEOUT:
            # The charge is taken, but its answer never reaches the caller.
            return self._lost_answer(op, request.reference, request.amount, request.currency)
        return self._charge_result(op, request.reference, charge, charge)

    def _record_charge(self, request: ChargeRequest) -> tuple[SandboxLedgerEntry, bool]:
        charge, created = self._insert_entry(
            SandboxLedgerEntry(
                gateway=self.name,
                operation=SandboxOperation.AUTHORIZE,
                reference=request.reference,
                order_reference=request.order_reference,
                gateway_reference=f"ch_{uuid.uuid4().hex}",
                amount=request.amount,
                currency=request.currency,
                token=request.token,
            )
        )
        if created and request.capture:
            SandboxLedgerEntry.objects.create(
                gateway=self.name,
                operation=SandboxOperation.CAPTURE,
                reference=request.reference,
                order_reference=request.order_reference,
                gateway_reference=charge.gateway_reference,
                amount=request.amount,
                currency=request.currency,
                token=request.token,
            )
        return charge, created

    def _replay_authorize(
        self, request: ChargeRequest, charge: SandboxLedgerEntry
    ) -> GatewayResult:
        same_request = (
            charge.amount == request.amount
            and charge.currency == request.currency
            and charge.order_reference == request.order_reference
            and charge.token == request.token
        )
        if not same_request:
            return self._refusal(Operation.AUTHORIZE, request.reference, IDEMPOTENCY_KEY_REUSED)
        return self._charge_result(Operation.AUTHORIZE, request.reference, charge, charge)

    # --- capture, void, refund ---

    def _apply(
        self,
        operation: SandboxOperation,
        *,
        reference: str,
        gateway_reference: str,
        amount: int | None,
        currency: str | None,
        refuse: _Refusal,
    ) -> GatewayResult:
        """Take ``operation`` on a charge: replay, refuse, or write one ledger row."""
        started = time.monotonic()
        chaos = self._chaos()
        self._sleep(chaos)
        op = Operation(operation.value)
        with transaction.atomic():
            # The charge's row lock serialises every operation on that charge, so the totals
            # read below cannot change before our row is written.
            charge = _CHARGE_LOCKED.first(self.name, gateway_reference)
            existing = self._entry(operation, reference)
            if existing is not None:
                same_request = existing.gateway_reference == gateway_reference and (
                    amount is None or (existing.amount == amount and existing.currency == currency)
                )
                result = (
                    self._charge_result(op, reference, existing, charge or existing)
                    if same_request
                    else self._refusal(op, reference, IDEMPOTENCY_KEY_REUSED)
                )
            elif charge is None:
                result = self._refusal(op, reference, CHARGE_NOT_FOUND)
            else:
                result = self._apply_to_charge(
                    operation,
                    reference,
                    charge,
                    amount=amount,
                    currency=currency,
                    refuse=refuse,
                    fault=self._fault(chaos, operation, reference),
                )
            self._log(
                operation,
                reference=reference,
                order_reference=charge.order_reference if charge else "",
                token=charge.token if charge else "",
                result=result,
            )
        return self._timed(result, started)

    def _apply_to_charge(
        self,
        operation: SandboxOperation,
        reference: str,
        charge: SandboxLedgerEntry,
        *,
        amount: int | None,
        currency: str | None,
        refuse: _Refusal,
        fault: Fault = Fault.NONE,
    ) -> GatewayResult:
        op = Operation(operation.value)
        card = CARDS.get(charge.token)
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
            return self._refusal(op, reference, AMOUNT_INVALID, card=card)
        if amount is not None and amount <= 0:
            return self._refusal(op, reference, AMOUNT_INVALID, card=card)
        if currency is not None and currency != charge.currency:
            return self._refusal(op, reference, CURRENCY_MISMATCH, card=card)
        code = refuse(charge, self._totals(charge))
        if code is not None:
            return self._refusal(op, reference, code, card=card)
        if fault is Fault.ERROR:
            return self._chaos_error(op, reference, card=card)
        entry, _ = self._insert_entry(
            SandboxLedgerEntry(
                gateway=self.name,
                operation=operation,
                reference=reference,
                order_reference=charge.order_reference,
                gateway_reference=charge.gateway_reference,
                amount=charge.amount if amount is None else amount,
                currency=charge.currency,
                token=charge.token,
            )
        )
        if fault is Fault.TIMEOUT:
            return self._lost_answer(op, reference, entry.amount, entry.currency)
        return self._charge_result(op, reference, entry, charge)

    def _totals(self, charge: SandboxLedgerEntry) -> _ChargeTotals:
        sums = dict(_SUMS.rows(self.name, charge.gateway_reference))
        return _ChargeTotals(
            captured=sums.get(SandboxOperation.CAPTURE.value, 0),
            refunded=sums.get(SandboxOperation.REFUND.value, 0),
            voided=SandboxOperation.VOID.value in sums,
        )

    # --- shared plumbing ---

    def _insert_entry(self, entry: SandboxLedgerEntry) -> tuple[SandboxLedgerEntry, bool]:
        """Write ``entry`` unless its reference has a row for its operation already: returns
        the row and whether it is the new one (a raced call finds the other's row)."""
        sql, params = insert_statement(entry)
        with bound_cursor() as cursor:
            cursor.execute(sql + _LEDGER_CONFLICT, params)
            row = cursor.fetchone()
        if row is not None:
            entry.pk = row[0]
            mark_saved(entry)
            return entry, True
        existing = self._entry(SandboxOperation(entry.operation), entry.reference)
        if existing is None:  # cannot happen: the conflicting row is committed or ours
            raise RuntimeError(f"sandbox ledger: no row for {entry.reference}")
        return existing, False

    def _entry(self, operation: SandboxOperation, reference: str) -> SandboxLedgerEntry | None:
        return _ENTRY.first(self.name, operation, reference)

    def _charge_result(
        self,
        operation: Operation,
        reference: str,
        entry: SandboxLedgerEntry,
        charge: SandboxLedgerEntry,
    ) -> GatewayResult:
        card = CARDS.get(charge.token)
        return GatewayResult(
            outcome=Outcome.SUCCEEDED,
            gateway=self.name,
            operation=operation,
            reference=reference,
            gateway_reference=charge.gateway_reference,
            amount=entry.amount,
            currency=entry.currency,
            brand=card.brand if card else None,
            last4=card.last4 if card else None,
        )

    def _refusal(
        self, operation: Operation, reference: str, code: str, *, card: Card | None = None
    ) -> GatewayResult:
        return GatewayResult(
            outcome=Outcome.DECLINED,
            gateway=self.name,
            operation=operation,
            reference=reference,
            decline_code=code,
            message=MESSAGES.get(code, code),
            brand=card.brand if card else None,
            last4=card.last4 if card else None,
        )

    def _log(
        self,
        operation: SandboxOperation,
        *,
        reference: str,
        order_reference: str,
        token: str,
        result: GatewayResult,
    ) -> None:
        insert(
            SandboxRequest(
                gateway=self.name,
                operation=operation,
                reference=reference,
                order_reference=order_reference,
                token=token[:64],
                outcome=result.outcome,
                decline_code=result.decline_code or "",
            )
        )

    def _lock(self, kind: str, key: str) -> None:
        """Take a transaction-scoped advisory lock on ``kind:key`` (released at commit)."""
        with bound_cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))",
                [_LOCK_NAMESPACE, f"sandbox:{kind}:{key}"],
            )

    def _sleep(self, chaos: ChaosConfig | None = None) -> None:
        latency_ms = self.latency_ms if self.latency_ms is not None else settings.SANDBOX_LATENCY_MS
        if chaos is not None:
            latency_ms += chaos.added_latency_ms
        left = seconds_left()
        seconds = latency_ms / 1000 if left is None else min(latency_ms / 1000, left)
        if seconds > 0:
            time.sleep(seconds)

    # --- chaos ---

    def _chaos(self) -> ChaosConfig | None:
        """The faults switched on for this account; none when Redis cannot say.

        Fault injection must never be what breaks the sandbox, so a Redis error or a malformed
        config means "no faults" (logged).
        """
        try:
            return get_chaos(self.name)
        except (RedisError, ValueError, TypeError):
            logger.warning("sandbox %s: chaos config unreadable, no faults", self.name)
            return None

    def _fault(
        self, chaos: ChaosConfig | None, operation: SandboxOperation, reference: str
    ) -> Fault:
        """The fault for this call: only the first call with a reference can meet one."""
        if chaos is None:
            return Fault.NONE
        seen_before = SandboxRequest.objects.filter(
            gateway=self.name, operation=operation, reference=reference
        ).exists()
        if seen_before:
            return Fault.NONE
        return decide(chaos, gateway=self.name, operation=operation.value, reference=reference)

    def _chaos_error(
        self, operation: Operation, reference: str, *, card: Card | None
    ) -> GatewayResult:
        return dataclasses.replace(
            self._refusal(operation, reference, GATEWAY_ERROR, card=card),
            outcome=Outcome.RETRYABLE_ERROR,
        )

    def _lost_answer(
        self, operation: Operation, reference: str, amount: int, currency: str
    ) -> GatewayResult:
        return GatewayResult(
            outcome=Outcome.UNKNOWN,
            gateway=self.name,
            operation=operation,
            reference=reference,
            amount=amount,
            currency=currency,
            decline_code=GATEWAY_TIMEOUT,
            message=MESSAGES[GATEWAY_TIMEOUT],
        )

    @staticmethod
    def _timed(result: GatewayResult, started: float) -> GatewayResult:
        elapsed_ms = round((time.monotonic() - started) * 1000)
        return dataclasses.replace(result, latency_ms=elapsed_ms)
