"""The gateway-call path for all four operations: plan (commit), send (no transaction), record.

Authorize, capture, void and refund all go the same way, under the payment's Redis lock:

1. **plan** (one short transaction): the operation to send is chosen or resumed, and marked
   ``maybe_sent`` with this sender's lock token as its ``fence`` and a ``next_check_at`` past
   which the reconciler may drive it again. From this commit on, the operation may reach the
   gateway, so nothing may treat it as "not taken" without the gateway's word.
2. **send** (no transaction open): an operation that an earlier sender may have sent is first
   looked up on the same gateway by its reference; then it is sent with that same reference
   (the gateway's idempotency key), and a call whose answer was lost is looked up once more.
3. **record** (one short transaction, fenced): the verdict and the transition it implies; a
   sender whose fence was replaced by a later sender records nothing.

Every send ends in one verdict (docs/ARCHITECTURE.md, "Every call ends in exactly one outcome"):

* ``succeeded``: the gateway took it (its answer, or a lookup that found it);
* ``declined``: the gateway refused it (its answer, or a lookup that found it refused);
* ``not_taken``: known not taken: this call was ``not_sent``, or answered with a retryable
  error that a lookup confirmed (no record), *and* no earlier call with the reference can
  have been taken (none was sent, or a lookup made under the lock found no record of it).
  Only this and ``declined`` may lead to another gateway, to ``failed``, or to a failed
  refund;
* ``unknown``: anything else. The operation stays open (the payment ``processing``, the refund
  ``pending``) and is looked up again, by the task and then by the reconciler with backoff,
  for as long as it takes; past ``UNRESOLVED_ATTENTION_SECONDS`` it is listed for staff.
  It is never guessed.

A lookup's "no record" is trusted only when made under the lock after an earlier run: the
previous sender's lock lived past its calls' deadlines, so nothing of ours is still in flight.
Right after our own timed-out send the request may still be on its way, so a "no record" then
keeps the operation unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from common import backoff
from common.rows import (
    Compiled,
    Statement,
    execute,
    insert,
    insert_statement,
    mark_saved,
    update_statement,
)
from gateways.base import (
    CaptureRequest,
    ChargeRequest,
    GatewayResult,
    Outcome,
    RefundRequest,
    VoidRequest,
)
from gateways.health import gateway_available
from gateways.resilience import call_gateway
from outbox.services import kicks_deferred
from routing.metrics import record_result
from routing.router import PaymentFacts, route

from .errors import OperationInProgress, PaymentNotFound
from .eventstore import SYSTEM, Step, apply_transition, apply_transitions, locked, record_event
from .locks import PaymentBusy, lock_ttl_seconds, payment_gateway_lock
from .models import (
    OPEN_ATTEMPT_STATUSES,
    AttemptOperation,
    AttemptStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from .risk import risk_assess
from .services import _new_attempt, _refund_data, _send_after_commit

logger = logging.getLogger(__name__)

REFUND = "refund"

# The attempt reads of every run, compiled once per process (common/rows.py; issue 13): an
# attempt by its id, and a payment's latest authorize, each locked.
_ATTEMPT: Compiled[PaymentAttempt] = Compiled(
    lambda pk: PaymentAttempt.objects.locked().filter(pk=pk)
)
_LAST_AUTHORIZE: Compiled[PaymentAttempt] = Compiled(
    lambda payment_id: (
        PaymentAttempt.objects.locked()
        .filter(payment_id=payment_id, operation=AttemptOperation.AUTHORIZE)
        .order_by("-number")[:1]
    )
)


class Verdict(StrEnum):
    """What one run of the path established about an operation (see the module docstring)."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    NOT_TAKEN = "not_taken"
    UNKNOWN = "unknown"


class Next(StrEnum):
    """What the task should do after a run."""

    DONE = "done"  # nothing more for this task (the operation is closed, or not ours)
    RETRY_NOW = "retry_now"  # known not taken and nothing was sent: go again at once
    RETRY_LATER = "retry_later"  # go again after backoff


class FenceLost(Exception):
    """A later sender re-planned this operation; this sender's answer is not recorded."""


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """One operation to send, committed before the call. ``reference`` is the attempt (or
    refund) id, the gateway's idempotency key; ``maybe_sent`` says an earlier sender may have
    sent it already; ``created_at`` is the attempt's (or refund's) own time (``first_sent_at``
    reads the operation's first only when a run needs it); ``facts`` are what routing learns
    the authorize's answer under."""

    operation: str  # authorize, capture, void or refund
    payment_id: str
    reference: str
    gateway: str
    amount: int
    currency: str
    token: str
    gateway_reference: str
    maybe_sent: bool
    created_at: datetime
    fence: str
    facts: PaymentFacts | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """The outcome of ``send``: the verdict, the answer to record (the lookup's when a lookup
    settled it), and the send call's own answer (``None`` when no send was needed), which is
    what routing metrics learn from: a timeout is a timeout, however it was settled later."""

    verdict: Verdict
    result: GatewayResult
    call: GatewayResult | None


# --- plan ---


def payment_facts(payment: Payment) -> PaymentFacts:
    """What the router may know of a payment (plain values; routing never sees the model)."""
    return PaymentFacts(
        payment_id=payment.id,
        merchant_id=payment.merchant_id,
        amount=payment.amount,
        currency=payment.currency,
        method=str(payment.payment_method.get("type", "card")),
        country=str(payment.customer.get("country", "")),
        metadata=dict(payment.metadata),
        livemode=payment.livemode,
    )


def _planned_fields(sends: int, fence: str) -> dict[str, Any]:
    """What a plan writes on an attempt or refund: from now on it may reach the gateway."""
    return {
        "sends": sends,
        "maybe_sent": True,
        "fence": fence,
        "next_check_at": timezone.now() + timedelta(seconds=check_backoff_seconds(sends)),
    }


def _mark_planned(row: PaymentAttempt | Refund, fence: str) -> None:
    """The plan's write on an existing row."""
    fields = _planned_fields(row.sends + 1, fence)
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=list(fields))


def check_backoff_seconds(sends: int) -> float:
    """How long after a plan the reconciler leaves the operation to its sender: at least the
    lock's lifetime (so a live sender is never raced), growing with every send up to
    ``RECONCILE_BACKOFF_MAX_SECONDS``."""
    grown = backoff.backoff_ceiling(
        sends, base=settings.RECONCILE_AFTER_SECONDS, cap=settings.RECONCILE_BACKOFF_MAX_SECONDS
    )
    return max(lock_ttl_seconds(), grown)


def first_sent_at(plan: GatewayPlan) -> datetime:
    """When the operation was first asked for: its payment's first attempt of that operation
    (an authorize's fallbacks count from the first gateway's), a refund's own time. Read only
    when a run's answer leaves the operation open: attempts' times never change."""
    if plan.operation == REFUND:
        return plan.created_at
    first = (
        PaymentAttempt.objects.filter(payment_id=plan.payment_id, operation=plan.operation)
        .order_by("number")
        .values_list("created_at", flat=True)
        .first()
    )
    return first or plan.created_at


def _attempt_plan(
    payment: Payment, attempt: PaymentAttempt, *, fence: str, facts: PaymentFacts | None = None
) -> GatewayPlan:
    maybe_sent = attempt.maybe_sent or attempt.status == AttemptStatus.UNKNOWN
    _mark_planned(attempt, fence)
    return _plan_of(payment, attempt, fence=fence, maybe_sent=maybe_sent, facts=facts)


def _plan_of(
    payment: Payment,
    attempt: PaymentAttempt,
    *,
    fence: str,
    maybe_sent: bool,
    facts: PaymentFacts | None = None,
) -> GatewayPlan:
    """The plan of an attempt whose plan's write is made (``_planned_fields``)."""
    if facts is None and attempt.operation == AttemptOperation.AUTHORIZE:
        facts = payment_facts(payment)
    return GatewayPlan(
        operation=attempt.operation,
        payment_id=payment.id,
        reference=attempt.id,
        gateway=attempt.gateway,
        amount=attempt.amount,
        currency=attempt.currency,
        token=str(payment.payment_method.get("token", "")),
        gateway_reference=payment.gateway_reference,
        maybe_sent=maybe_sent,
        created_at=attempt.created_at,
        fence=fence,
        facts=facts,
    )


def authorize_plan(
    *, payment_id: str, fence: str, available: Callable[[str], bool] | None = None
) -> GatewayPlan | None:
    """Commit the authorize to send for a payment, or ``None`` when there is none to send.

    * ``initiated``: choose a gateway, open an attempt, move to ``processing``.
    * ``processing`` with an open attempt (pending or unknown): that attempt again, the same
      reference, marked as maybe sent when an earlier sender had it.
    * ``processing`` whose last attempt is known not taken (``error``): a new attempt on the
      next gateway (``retry_attempt``): the fallback. No other attempt of a payment is ever
      opened while one may hold funds.
    * any other state: ``None``.

    Fails the payment with ``no_gateway_available`` when no gateway can take it (it holds no
    funds then: every attempt is closed as declined or not taken). Call under the payment's
    lock; raises ``PaymentNotFound``.
    """
    with locked(payment_id) as payment:
        last = _LAST_AUTHORIZE.first(payment.id)
        if last is not None:
            last.payment = payment
        if payment.status == PaymentStatus.PROCESSING and last is not None:
            if last.status in OPEN_ATTEMPT_STATUSES:
                return _attempt_plan(payment, last, fence=fence)
            if last.status != AttemptStatus.ERROR:
                return None
        elif payment.status != PaymentStatus.INITIATED:
            return None
        risk = None
        if payment.status == PaymentStatus.INITIATED:
            # The risk checks, before any gateway is chosen (payments/risk.py). A decision
            # with nothing to report is kept in the payment.processing event's data.
            risk = risk_assess(payment)
            if risk.verdicts or risk.unchecked:
                record_event(payment, "payment.risk_assessed", actor=SYSTEM, data=risk.as_dict())
            if risk.declined:
                apply_transition(
                    payment,
                    "fail",
                    actor=SYSTEM,
                    changes={"failure_code": "risk_declined", "failure_message": risk.message},
                    data={"risk": risk.as_dict()},
                )
                return None
        after = last.gateway if payment.status == PaymentStatus.PROCESSING and last else None
        facts = payment_facts(payment)
        decision = route(
            facts=facts,
            merchant_gateways=payment.merchant.gateways,
            after=after,
            available=available,
        )
        if not decision.gateways:
            apply_transition(
                payment,
                "fail",
                actor=SYSTEM,
                changes={
                    "failure_code": "no_gateway_available",
                    "failure_message": "no gateway of the merchant can take this payment now",
                },
                data={"routing": decision.as_dict()},
            )
            return None
        gateway = decision.gateways[0]
        # Opened planned, and written in its event's statement (issue 13). No attempt of the
        # payment is open here (an open one was planned again above), and while the payment is
        # initiated or processing its attempts are authorizes only, so the last authorize's
        # number is the last number; the database's unique indexes refuse the row otherwise.
        attempt = _new_attempt(
            payment,
            number=(last.number if last is not None else 0) + 1,
            operation=AttemptOperation.AUTHORIZE,
            amount=payment.amount,
            gateway=gateway,
            routing_decision=decision.as_dict(),
            **_planned_fields(1, fence),
        )
        transition = (
            "start_processing" if payment.status == PaymentStatus.INITIATED else "retry_attempt"
        )
        apply_transition(
            payment,
            transition,
            actor=SYSTEM,
            changes={"gateway": gateway},
            data={
                "attempt": attempt.id,
                "gateway": gateway,
                "routing": decision.as_dict(),
                **({"risk": risk.as_dict()} if risk is not None else {}),
            },
            along=(insert_statement(attempt),),
        )
        mark_saved(attempt)
        return _plan_of(payment, attempt, fence=fence, maybe_sent=False, facts=facts)


def operation_plan(
    *, attempt_id: str, fence: str, payment_id: str | None = None
) -> GatewayPlan | None:
    """Commit the capture or void attempt to send, or ``None`` when it is closed already.
    ``payment_id`` is the attempt's, when the caller knows it already."""
    if payment_id is None:
        payment_id = PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=attempt_id)
    with locked(payment_id) as payment:
        attempt = _ATTEMPT.get(attempt_id)
        if attempt.status not in OPEN_ATTEMPT_STATUSES:
            return None
        return _attempt_plan(payment, attempt, fence=fence)


def refund_plan(*, refund_id: str, fence: str) -> GatewayPlan | None:
    """Commit the refund to send, or ``None`` when it is no longer pending."""
    payment_id = Refund.objects.values_list("payment_id", flat=True).get(pk=refund_id)
    with locked(payment_id) as payment:
        refund = Refund.objects.locked().get(pk=refund_id)
        if refund.status != RefundStatus.PENDING:
            return None
        maybe_sent = refund.maybe_sent
        _mark_planned(refund, fence)
        return GatewayPlan(
            operation=REFUND,
            payment_id=payment.id,
            reference=refund.id,
            gateway=payment.gateway,
            amount=refund.amount,
            currency=refund.currency,
            token="",
            gateway_reference=payment.gateway_reference,
            maybe_sent=maybe_sent,
            created_at=refund.created_at,
            fence=fence,
        )


# --- send ---


def _request(plan: GatewayPlan) -> Callable[[Any], GatewayResult]:
    if plan.operation == AttemptOperation.AUTHORIZE:
        charge = ChargeRequest(
            reference=plan.reference,
            order_reference=plan.payment_id,
            amount=plan.amount,
            currency=plan.currency,
            token=plan.token,
        )
        return lambda g: g.authorize(charge)
    if plan.operation == AttemptOperation.CAPTURE:
        capture = CaptureRequest(
            reference=plan.reference,
            gateway_reference=plan.gateway_reference,
            amount=plan.amount,
            currency=plan.currency,
        )
        return lambda g: g.capture(capture)
    if plan.operation == AttemptOperation.VOID:
        void = VoidRequest(reference=plan.reference, gateway_reference=plan.gateway_reference)
        return lambda g: g.void(void)
    refund = RefundRequest(
        reference=plan.reference,
        gateway_reference=plan.gateway_reference,
        amount=plan.amount,
        currency=plan.currency,
    )
    return lambda g: g.refund(refund)


def _lookup(plan: GatewayPlan) -> GatewayResult:
    return call_gateway(
        plan.gateway,
        "lookup",
        lambda g: g.lookup(plan.reference, plan.operation),
        reference=plan.reference,
    )


def _settled(found: GatewayResult) -> Verdict | None:
    if found.outcome == Outcome.SUCCEEDED:
        return Verdict.SUCCEEDED
    if found.outcome == Outcome.DECLINED:
        return Verdict.DECLINED
    return None


def send(plan: GatewayPlan) -> Sent:
    """Send a planned operation and say what became of it. Opens no transaction; never raises
    for a gateway's misbehaviour (``call_gateway`` turns it into an outcome)."""
    clean = not plan.maybe_sent
    if plan.maybe_sent:
        found = _lookup(plan)
        verdict = _settled(found)
        if verdict is not None:
            return Sent(verdict, found, None)
        # "No record", asked under the lock after the earlier sender's deadline: not taken.
        clean = found.outcome == Outcome.NOT_FOUND
    call = call_gateway(plan.gateway, plan.operation, _request(plan), reference=plan.reference)
    if call.outcome == Outcome.SUCCEEDED:
        return Sent(Verdict.SUCCEEDED, call, call)
    if call.outcome == Outcome.DECLINED:
        return Sent(Verdict.DECLINED, call, call)
    if call.not_sent:
        return Sent(Verdict.NOT_TAKEN if clean else Verdict.UNKNOWN, call, call)
    # A retryable error or a lost answer: ask the same gateway about this reference before
    # anything else. An error answer ended the request, so "no record" then is trusted (a
    # gateway can fail after taking an operation: a 5xx is no proof that nothing was taken);
    # after a lost answer the request may still be in flight, so it is not.
    found = _lookup(plan)
    verdict = _settled(found)
    if verdict is not None:
        return Sent(verdict, found, call)
    if call.retryable and clean and found.outcome == Outcome.NOT_FOUND:
        return Sent(Verdict.NOT_TAKEN, call, call)
    return Sent(Verdict.UNKNOWN, call, call)


# --- record ---


def _fenced_attempt(plan: GatewayPlan) -> PaymentAttempt:
    attempt = _ATTEMPT.get(plan.reference)
    if attempt.fence != plan.fence:
        raise FenceLost(plan.reference)
    return attempt


def _finish_attempt(attempt: PaymentAttempt, sent: Sent, status: str) -> Statement:
    """Close or keep ``attempt`` open by the verdict; returns its row's UPDATE, for the
    caller to send with its event's statement (``along``), or alone (``execute``)."""
    result = sent.result
    attempt.status = status
    attempt.gateway_reference = result.gateway_reference or attempt.gateway_reference
    attempt.error_code = result.decline_code or ""
    attempt.error_message = result.message[:500]
    attempt.latency_ms = (sent.call or result).latency_ms
    # Known not taken: a later run need not look it up first.
    attempt.maybe_sent = sent.verdict is not Verdict.NOT_TAKEN and attempt.maybe_sent
    attempt.completed_at = timezone.now() if status not in OPEN_ATTEMPT_STATUSES else None
    return update_statement(attempt)


def _attempt_data(attempt: PaymentAttempt, sent: Sent) -> dict[str, Any]:
    return {
        "attempt": attempt.id,
        "operation": attempt.operation,
        "gateway": attempt.gateway,
        "outcome": str(sent.result.outcome),
        "verdict": str(sent.verdict),
        "code": sent.result.decline_code,
        "latency_ms": (sent.call or sent.result).latency_ms,
    }


def authorize_record(*, plan: GatewayPlan, sent: Sent, final: bool = False) -> GatewayPlan | None:
    """Record the verdict on an authorize attempt, with the transition it implies.

    ``succeeded`` -> ``authorized``; for automatic capture a capture attempt is opened and
    planned in the same transaction, under the same fence, and its plan returned for the same
    run to send (``_run``); ``declined`` -> ``failed``; ``not_taken`` -> the attempt
    closes as ``error`` (``payment.attempt_failed``) and the next run tries the next gateway,
    or with ``final`` the payment fails; ``unknown`` -> the attempt stays open as ``unknown``
    and the payment ``processing``, whatever ``final`` says. Raises ``FenceLost`` when another
    sender planned the attempt since; idempotent for a closed attempt. Returns the capture's
    plan, or ``None``.
    """
    with locked(plan.payment_id) as payment:
        attempt = _fenced_attempt(plan)
        if attempt.status not in OPEN_ATTEMPT_STATUSES:
            return None
        data = _attempt_data(attempt, sent)
        result = sent.result
        if sent.verdict is Verdict.SUCCEEDED:
            finished = _finish_attempt(attempt, sent, AttemptStatus.SUCCEEDED)
            method = dict(payment.payment_method)
            method.update(
                {k: v for k, v in (("brand", result.brand), ("last4", result.last4)) if v}
            )
            expires = timezone.now() + timedelta(hours=settings.AUTHORIZATION_EXPIRY_HOURS)
            apply_transition(
                payment,
                "authorize",
                actor=SYSTEM,
                changes={
                    "amount_authorized": result.amount or attempt.amount,
                    "gateway": attempt.gateway,
                    "gateway_reference": result.gateway_reference or "",
                    "payment_method": method,
                    "authorization_expires_at": expires,
                },
                data=data,
                along=(finished,),
            )
            if payment.capture_method == "automatic":
                # Sent by the run that recorded this, at once, under the same lock, without a
                # task or a plan transaction of its own (issue 13); a run that dies before
                # sending it leaves it open and planned, and the reconciler sends it once its
                # next_check_at has passed.
                # Numbered after the authorize, without the attempts' counts: it was the open
                # attempt, so the newest, and it is closed now (the indexes guard both).
                capture = _new_attempt(
                    payment,
                    number=attempt.number + 1,
                    operation=AttemptOperation.CAPTURE,
                    amount=payment.amount_authorized,
                    **_planned_fields(1, plan.fence),
                )
                insert(capture)
                return _plan_of(payment, capture, fence=plan.fence, maybe_sent=False)
        elif sent.verdict is Verdict.DECLINED or (final and sent.verdict is Verdict.NOT_TAKEN):
            declined = sent.verdict is Verdict.DECLINED
            finished = _finish_attempt(
                attempt, sent, AttemptStatus.DECLINED if declined else AttemptStatus.ERROR
            )
            apply_transition(
                payment,
                "fail",
                actor=SYSTEM,
                changes={
                    "failure_code": result.decline_code or "processing_error",
                    "failure_message": result.message or "the gateway refused the payment",
                },
                data=data,
                along=(finished,),
            )
        elif sent.verdict is Verdict.NOT_TAKEN:
            finished = _finish_attempt(attempt, sent, AttemptStatus.ERROR)
            record_event(
                payment, "payment.attempt_failed", actor=SYSTEM, data=data, along=(finished,)
            )
        else:
            first = attempt.status != AttemptStatus.UNKNOWN
            finished = _finish_attempt(attempt, sent, AttemptStatus.UNKNOWN)
            if first:
                record_event(
                    payment, "payment.attempt_failed", actor=SYSTEM, data=data, along=(finished,)
                )
            else:
                execute(finished)
    return None


def operation_record(*, plan: GatewayPlan, sent: Sent) -> Payment:
    """Record the verdict on a capture or void attempt, with the transition it implies.

    Capture succeeded: ``authorized -> captured`` (and at once ``-> completed`` for automatic
    capture). Void succeeded: ``authorized -> cancelled`` (an expired payment stays expired).
    Declined: the attempt closes, ``payment.attempt_failed``, the payment keeps its state.
    Not taken: the attempt stays ``pending`` (a capture or void that is owed is sent again);
    unknown: it stays open as ``unknown`` until a lookup settles it. Raises ``FenceLost``.
    """
    with locked(plan.payment_id) as payment:
        attempt = _fenced_attempt(plan)
        if attempt.status not in OPEN_ATTEMPT_STATUSES:
            return payment
        data = _attempt_data(attempt, sent)
        if sent.verdict is Verdict.SUCCEEDED:
            finished = (_finish_attempt(attempt, sent, AttemptStatus.SUCCEEDED),)
            if attempt.operation == AttemptOperation.CAPTURE:
                captured = Step("capture", {"amount_captured": attempt.amount}, data)
                # An automatic capture completes at once: both events in one write.
                steps = (
                    [captured, Step("complete")]
                    if payment.capture_method == "automatic"
                    else [captured]
                )
                apply_transitions(payment, steps, actor=SYSTEM, along=finished)
            elif payment.status == PaymentStatus.AUTHORIZED:
                apply_transition(payment, "cancel", actor=SYSTEM, data=data, along=finished)
            else:
                record_event(payment, "payment.voided", actor=SYSTEM, data=data, along=finished)
        elif sent.verdict is Verdict.DECLINED:
            finished = (_finish_attempt(attempt, sent, AttemptStatus.DECLINED),)
            record_event(payment, "payment.attempt_failed", actor=SYSTEM, data=data, along=finished)
        elif sent.verdict is Verdict.NOT_TAKEN:
            execute(_finish_attempt(attempt, sent, AttemptStatus.PENDING))
        else:
            execute(_finish_attempt(attempt, sent, AttemptStatus.UNKNOWN))
    return payment


def _refund_result(refund: Refund, sent: Sent) -> dict[str, Any]:
    return {
        **_refund_data(refund),
        "outcome": str(sent.result.outcome),
        "verdict": str(sent.verdict),
        "code": sent.result.decline_code,
    }


def refund_record(*, plan: GatewayPlan, sent: Sent, final: bool = False) -> Refund:
    """Record the verdict on a refund, with the payment transition it implies.

    Succeeded: ``amount_refunded`` grows and the payment becomes ``refunded`` or
    ``partially_refunded``. Declined, or not taken with ``final``: the refund fails and the
    payment goes back to ``completed`` or ``partially_refunded`` (the money is still captured).
    Unknown never fails a refund: it stays ``pending`` until the gateway says what became of
    it. Raises ``FenceLost``; idempotent for a refund no longer pending.
    """
    with locked(plan.payment_id) as payment:
        refund = Refund.objects.locked().get(pk=plan.reference)
        if refund.fence != plan.fence:
            raise FenceLost(plan.reference)
        if refund.status != RefundStatus.PENDING:
            return refund
        result = sent.result
        if sent.verdict is Verdict.SUCCEEDED:
            refund.status = RefundStatus.SUCCEEDED
            refund.gateway_reference = result.gateway_reference or ""
            refund.save()
            refunded = payment.amount_refunded + refund.amount
            record_event(
                payment, "refund.succeeded", actor=SYSTEM, data=_refund_result(refund, sent)
            )
            transition = (
                "mark_refunded"
                if refunded == payment.amount_captured
                else "mark_partially_refunded"
            )
            apply_transition(
                payment, transition, actor=SYSTEM, changes={"amount_refunded": refunded}
            )
        elif sent.verdict is Verdict.DECLINED or (final and sent.verdict is Verdict.NOT_TAKEN):
            refund.status = RefundStatus.FAILED
            refund.failure_code = result.decline_code or "refund_failed"
            refund.maybe_sent = False
            refund.save()
            record_event(payment, "refund.failed", actor=SYSTEM, data=_refund_result(refund, sent))
            transition = (
                "restore_completed" if payment.amount_refunded == 0 else "mark_partially_refunded"
            )
            apply_transition(payment, transition, actor=SYSTEM, data={"refund": refund.id})
        else:
            refund.maybe_sent = sent.verdict is not Verdict.NOT_TAKEN and refund.maybe_sent
            refund.save(update_fields=["maybe_sent", "updated_at"])
    return refund


# --- one run: lock, plan, send, record ---


def out_of_retries(retries: int, first_at: datetime) -> bool:
    """True once the task's retry count or the deadline since the first attempt is spent."""
    deadline = first_at + timedelta(seconds=settings.GATEWAY_RETRY_DEADLINE_SECONDS)
    return retries >= settings.GATEWAY_MAX_RETRIES or timezone.now() > deadline


def _next(plan: GatewayPlan, sent: Sent, *, final: bool) -> Next:
    if sent.verdict in (Verdict.SUCCEEDED, Verdict.DECLINED):
        return Next.DONE
    if final:
        # Past the task's bound: a known-not-taken authorize or refund was closed by the
        # record step; anything still open is the reconciler's, with backoff.
        return Next.DONE
    if (
        plan.operation == AttemptOperation.AUTHORIZE
        and sent.verdict is Verdict.NOT_TAKEN
        and sent.result.not_sent
    ):
        return Next.RETRY_NOW  # nothing was sent: the next gateway, at once
    return Next.RETRY_LATER


def _learn(sent: Sent, plan: GatewayPlan) -> None:
    """Feed the send call's own answer (a timeout stays a timeout) into the routing metrics,
    under the facts the plan routed by. Best effort: the payment is recorded already."""
    if sent.call is None or plan.facts is None:
        return
    try:
        record_result(sent.call, facts=plan.facts)
    except RedisError:
        logger.warning("routing metrics not updated for %s", plan.payment_id, exc_info=True)


Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    """Where a run has reached: ``locked``, ``planned``, ``sent``, ``recorded``. The
    deterministic simulator (bench/simulate.py) passes its own, to abandon a run between any
    two steps as a killed worker would."""


def _record(plan: GatewayPlan, sent: Sent, final: bool) -> GatewayPlan | None:
    """The record step of the plan's operation; returns the follow-up an authorize's record
    planned (its automatic capture), if any."""
    if plan.operation == AttemptOperation.AUTHORIZE:
        return authorize_record(plan=plan, sent=sent, final=final)
    if plan.operation == REFUND:
        refund_record(plan=plan, sent=sent, final=final)
    else:
        operation_record(plan=plan, sent=sent)
    return None


def _send_and_record(
    planned: GatewayPlan, *, retries: int, checkpoint: Checkpoint
) -> tuple[Sent, bool, GatewayPlan | None]:
    """Send, then record; returns the answer, whether the task is out of retries, and the
    follow-up operation the record planned (an automatic capture), if any."""
    checkpoint("planned")
    sent = send(planned)
    checkpoint("sent")
    # Only an operation the answer leaves open can be out of retries.
    final = sent.verdict not in (Verdict.SUCCEEDED, Verdict.DECLINED) and out_of_retries(
        retries, first_sent_at(planned)
    )
    follow = _record(planned, sent, final)
    checkpoint("recorded")
    return sent, final, follow


def _follow_up(plan: GatewayPlan, checkpoint: Checkpoint) -> Next:
    """Send and record the follow-up an authorize's record planned (its automatic capture),
    under the lock the run holds."""
    try:
        sent, final, _ = _send_and_record(plan, retries=0, checkpoint=checkpoint)
    except FenceLost:
        logger.warning("%s: re-planned by another sender, not recorded", plan.reference)
        return Next.DONE
    return _next(plan, sent, final=final)


@kicks_deferred()  # the run's transactions kick the relay once, as it ends (issue 13)
def _run(
    payment_id: str,
    what: str,
    plan: Callable[[str], GatewayPlan | None],
    *,
    retries: int,
    checkpoint: Checkpoint,
) -> Next:
    """Lock, plan, send, record (the plan's operation's record step), and the same for a
    follow-up the record planned. A busy lock
    means another sender has the payment: retry later. A fence lost means a later sender
    re-planned the operation: it is theirs. A follow-up that cannot finish in this run (the
    gateway answers retryably or not at all) gets its own task, queued once the lock is
    released, with its retries and backoff."""
    follow: GatewayPlan | None = None
    follow_step = Next.DONE
    try:
        with payment_gateway_lock(payment_id) as fence:
            checkpoint("locked")
            planned = plan(fence)
            if planned is None:
                return Next.DONE
            sent, final, follow = _send_and_record(planned, retries=retries, checkpoint=checkpoint)
            if follow is not None:
                follow_step = _follow_up(follow, checkpoint)
    except PaymentBusy:
        return Next.RETRY_LATER
    except FenceLost:
        logger.warning("%s: re-planned by another sender, not recorded", what)
        return Next.DONE
    if follow is not None and follow_step is not Next.DONE:
        _send_after_commit("payment_operation_execute", follow.reference)
    if planned.operation == AttemptOperation.AUTHORIZE:
        _learn(sent, planned)
    return _next(planned, sent, final=final)


def authorize_run(
    *, payment_id: str, retries: int = 0, checkpoint: Checkpoint = _no_checkpoint
) -> Next:
    """One run of a payment's authorize (see ``authorize_plan`` and ``authorize_record``), and,
    once the payment is authorised for automatic capture, its capture in the same run: planned
    by the authorize's record and sent under the same lock (``_run``), or, when there was no
    authorize to send (an earlier run authorised it and died before its capture), the open
    capture (``automatic_capture_run``)."""
    nothing_planned: list[bool] = []

    def plan(fence: str) -> GatewayPlan | None:
        planned = authorize_plan(payment_id=payment_id, fence=fence, available=gateway_available)
        if planned is None:
            nothing_planned.append(True)
        return planned

    try:
        step = _run(
            payment_id,
            payment_id,
            plan,
            retries=retries,
            checkpoint=checkpoint,
        )
    except PaymentNotFound:
        logger.warning("authorize for a payment that does not exist: %s", payment_id)
        return Next.DONE
    except OperationInProgress:
        return Next.DONE  # another operation of the payment is open; the reconciler backs it up
    if step is Next.DONE and nothing_planned:
        automatic_capture_run(payment_id=payment_id, checkpoint=checkpoint)
    return step


def automatic_capture_run(*, payment_id: str, checkpoint: Checkpoint = _no_checkpoint) -> None:
    """Send the open capture attempt of an authorised automatic-capture payment now. When this
    run cannot finish it (the lock is busy, the gateway answers retryably or not at all), its
    own task takes over, with its retries and backoff."""
    capture_id = (
        PaymentAttempt.objects.filter(
            payment_id=payment_id,
            payment__status=PaymentStatus.AUTHORIZED,
            payment__capture_method="automatic",
            operation=AttemptOperation.CAPTURE,
            status__in=OPEN_ATTEMPT_STATUSES,
        )
        .values_list("id", flat=True)
        .first()
    )
    if capture_id is None:
        return
    step = _operation_run(
        attempt_id=capture_id, payment_id=payment_id, retries=0, checkpoint=checkpoint
    )
    if step is not Next.DONE:
        _send_after_commit("payment_operation_execute", capture_id)


def operation_run(
    *, attempt_id: str, retries: int = 0, checkpoint: Checkpoint = _no_checkpoint
) -> Next:
    """One run of a capture or void attempt (see ``operation_record``)."""
    payment_id = (
        PaymentAttempt.objects.filter(pk=attempt_id)
        .order_by()
        .values_list("payment_id", flat=True)
        .first()
    )
    if payment_id is None:
        return Next.DONE
    return _operation_run(
        attempt_id=attempt_id, payment_id=payment_id, retries=retries, checkpoint=checkpoint
    )


def _operation_run(
    *, attempt_id: str, payment_id: str, retries: int, checkpoint: Checkpoint
) -> Next:
    return _run(
        payment_id,
        attempt_id,
        lambda fence: operation_plan(attempt_id=attempt_id, fence=fence, payment_id=payment_id),
        retries=retries,
        checkpoint=checkpoint,
    )


def refund_run(
    *, refund_id: str, retries: int = 0, checkpoint: Checkpoint = _no_checkpoint
) -> Next:
    """One run of a refund (see ``refund_record``)."""
    payment_id = Refund.objects.filter(pk=refund_id).values_list("payment_id", flat=True).first()
    if payment_id is None:
        return Next.DONE
    return _run(
        payment_id,
        refund_id,
        lambda fence: refund_plan(refund_id=refund_id, fence=fence),
        retries=retries,
        checkpoint=checkpoint,
    )


def backoff_seconds(retries: int) -> float:
    """A task's retry countdown: exponential backoff with full jitter. ``retries`` is
    Celery's count of retries so far (0 before the first), so the first wait is up to the
    base."""
    return backoff.backoff_seconds(
        retries + 1,
        base=settings.GATEWAY_RETRY_BASE_SECONDS,
        cap=settings.GATEWAY_RETRY_MAX_SECONDS,
        factor=settings.GATEWAY_RETRY_FACTOR,
    )
