"""The one way to call a gateway: circuit breaker, bulkhead, hard timeout, breaker feedback.

:func:`call_gateway` never raises for a gateway's misbehaviour; it always answers with a
:class:`GatewayResult` whose outcome says what the caller may do next:

* ``circuit_open`` (NOT_SENT): the breaker refused; nothing was sent.
* ``bulkhead_full`` (NOT_SENT): every slot of the gateway is taken; nothing was sent.
* ``resilience_unavailable`` (NOT_SENT): Redis could not be asked; nothing was sent.
* ``gateway_timeout`` (UNKNOWN): no answer in time; the gateway may have taken it.
* ``gateway_exception`` (UNKNOWN): the adapter raised after it may have sent the request.
* anything else: the adapter's own answer.

For ``lookup``, which changes nothing at the gateway, a timeout or an exception is
RETRYABLE_ERROR instead of UNKNOWN: asking again is always safe.

An adapter that bounds its own calls by the deadline (``enforces_deadline``, as the sandbox
does and as an SDK does with its HTTP client's timeout) runs in the caller's thread, on the
caller's database connection, when no transaction is open there: an answer that comes at or
after the deadline is taken as no answer (``gateway_timeout``), as it would be from a thread.
Issue 13: a thread and a new database connection per call cost more than a zero-latency
sandbox call itself.

Any other adapter runs in its own daemon thread so that it can be abandoned at the deadline.
The thread keeps its bulkhead slot until the call really ends (the gateway is still serving it,
so it still counts against the gateway's concurrency), and closes its own database connection.
A thread per call, rather than a pool, means hung calls can never queue up the calls behind
them; a worker that exits does not wait for them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from django.conf import settings
from django.db import connection
from redis.exceptions import RedisError

from gateways.base import CALL_DEADLINE, GatewayAdapter, GatewayResult, Operation, Outcome
from gateways.breaker import (
    ALLOW_FUNCTION,
    CANCEL_FUNCTION,
    PRELUDE,
    RECORD_FUNCTION,
    CircuitBreaker,
    breaker_for,
)
from gateways.bulkhead import ACQUIRE_FUNCTION, Bulkhead, bulkhead_for
from gateways.chaos import chaos_key, chaos_read
from gateways.registry import get_gateway

logger = logging.getLogger(__name__)

CIRCUIT_OPEN = "circuit_open"
BULKHEAD_FULL = "bulkhead_full"
RESILIENCE_UNAVAILABLE = "resilience_unavailable"
GATEWAY_TIMEOUT = "gateway_timeout"
GATEWAY_EXCEPTION = "gateway_exception"

# The codes of the NOT_SENT answers made up before anything was sent: this call certainly took
# nothing (an earlier call with the same reference may have).
NOT_SENT_CODES = frozenset({CIRCUIT_OPEN, BULKHEAD_FULL, RESILIENCE_UNAVAILABLE})

MESSAGES: dict[str, str] = {
    CIRCUIT_OPEN: "The gateway's circuit breaker is open; the request was not sent.",
    BULKHEAD_FULL: "The gateway has too many calls in flight; the request was not sent.",
    RESILIENCE_UNAVAILABLE: "The breaker state could not be read; the request was not sent.",
    GATEWAY_TIMEOUT: "The gateway did not answer in time; the outcome is unknown.",
    GATEWAY_EXCEPTION: "The gateway call failed after it may have been sent.",
}

# Outcomes that say the gateway is healthy: a decline is a working gateway saying no.
_HEALTHY = frozenset({Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.NOT_FOUND})

# A call's bookkeeping in two round trips rather than four (issue 13): the breaker's and the
# bulkhead's keys of one gateway share its hash tag (one slot on a Redis Cluster), so one script
# can run both modules' functions atomically.
# KEYS: the breaker's three, the bulkhead's. ARGV: the breaker's nine, a trial token, then the
# bulkhead's limit, lease in ms and lease token.
_ADMIT = (
    PRELUDE
    + ALLOW_FUNCTION
    + CANCEL_FUNCTION
    + ACQUIRE_FUNCTION
    + f"""
local verdict = 'admitted'
if allow(ARGV[10]) == 0 then
    verdict = '{CIRCUIT_OPEN}'
elseif acquire(KEYS[4], tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13]) == 0 then
    cancel()
    verdict = '{BULKHEAD_FULL}'
end
if #KEYS > 4 then
    return {{verdict, redis.call('GET', KEYS[5])}}
end
return verdict
"""
)
# KEYS: as _ADMIT. ARGV: the breaker's nine, 'success' or 'failure', the lease token. Gives the
# slot back and feeds the breaker; returns the breaker's state after it.
_RELEASE_AND_RECORD = (
    PRELUDE
    + RECORD_FUNCTION
    + """
redis.call('ZREM', KEYS[4], ARGV[11])
return record(ARGV[10] == 'failure')
"""
)


def call_gateway(
    gateway: str,
    operation: Operation | str,
    call: Callable[[GatewayAdapter], GatewayResult],
    *,
    reference: str,
    timeout: float | None = None,
) -> GatewayResult:
    """Run ``call(adapter)`` against gateway account ``gateway``, guarded, and return its result.

    In order: the breaker must allow the call, a bulkhead slot must be free (otherwise a
    NOT_SENT ``circuit_open``/``bulkhead_full`` comes back and ``call`` is never run),
    then ``call`` runs with a hard deadline of ``timeout`` seconds (default settings
    ``GATEWAY_TIMEOUT_SECONDS``). Its outcome feeds the breaker: RETRYABLE_ERROR and UNKNOWN are
    failures; SUCCEEDED, DECLINED and NOT_FOUND are successes. ``latency_ms`` of the result is
    the wall time measured around the call. ``reference`` is the request's reference, echoed in
    the results this function makes up itself.

    Raises ``UnknownGateway`` when no adapter has that name, ``ValueError`` for an unknown
    operation, and ``RuntimeError`` when no thread can be started; in each case before anything
    was sent.
    """
    op = Operation(operation)
    adapter = get_gateway(gateway)
    limit = (
        float(getattr(settings, "GATEWAY_TIMEOUT_SECONDS", 10.0)) if timeout is None else timeout
    )
    breaker = breaker_for(gateway)
    bulkhead = bulkhead_for(gateway)

    def refused(code: str) -> GatewayResult:
        return _made_up(gateway, op, reference, Outcome.NOT_SENT, code)

    # The sandbox's fault config, read in the admission's round trip (gateways/chaos.py).
    read = chaos_key(gateway) if getattr(adapter, "reads_chaos", False) else None
    try:
        token, refusal, raw = _admit(breaker, bulkhead, read)
    except RedisError:
        logger.exception("gateway %s: breaker or bulkhead unreadable, %s not sent", gateway, op)
        return refused(RESILIENCE_UNAVAILABLE)
    if token is None:
        return refused(refusal)

    started = time.monotonic()
    if getattr(adapter, "enforces_deadline", False) and not connection.in_atomic_block:
        label = f"gateway {gateway}: {op} {reference}"
        try:
            with chaos_read(gateway, raw) if read is not None else contextlib.nullcontext():
                answer = _call_inline(call, adapter, deadline=started + limit, label=label)
        except BaseException:
            _quietly(lambda: bulkhead.release(token))
            raise
        if isinstance(answer, str):
            answer = _made_up(gateway, op, reference, _unsure(op), answer)
        return _finish(breaker, answer, started, lease=(bulkhead, token))
    try:
        future = _start(call, adapter, bulkhead, token, name=f"gateway-{gateway}-{op}")
    except BaseException:
        # The thread never started: nothing was sent, the slot and the trial go back.
        _quietly(lambda: bulkhead.release(token))
        _quietly(breaker.cancel)
        raise
    try:
        result = future.result(timeout=limit)
    except FutureTimeout:
        # Our deadline passed, or the adapter raised its own TimeoutError (a socket read
        # timeout, say): either way the request may have been taken and no answer came.
        logger.warning("gateway %s: %s %s got no answer in time", gateway, op, reference)
        result = _made_up(gateway, op, reference, _unsure(op), GATEWAY_TIMEOUT)
    except Exception:
        logger.exception("gateway %s: %s %s raised", gateway, op, reference)
        result = _made_up(gateway, op, reference, _unsure(op), GATEWAY_EXCEPTION)
    return _finish(breaker, result, started)


# --- internals ---


def _admit(
    breaker: CircuitBreaker, bulkhead: Bulkhead, read: str | None = None
) -> tuple[str | None, str, Any]:
    """The breaker's check and a bulkhead slot in one round trip: the slot's lease token, or
    None and why not (``circuit_open``; ``bulkhead_full``, the trial the breaker reserved
    given back); and, given a key to ``read``, its value in the same round trip (or None)."""
    token, acquire_args = bulkhead.acquire_arguments()
    answer = _scripts(breaker.redis)[0](
        keys=[*breaker.keys, bulkhead.key, *([read] if read is not None else [])],
        args=[*breaker.arguments, uuid.uuid4().hex, *acquire_args],
    )
    raw = None
    if read is not None:
        answer, raw = answer
    verdict = answer.decode() if isinstance(answer, bytes) else str(answer)
    return (token, "", raw) if verdict == "admitted" else (None, verdict, raw)


@functools.lru_cache(maxsize=8)
def _scripts(redis: Any) -> tuple[Any, Any]:
    """``_ADMIT`` and ``_RELEASE_AND_RECORD`` registered on the client (one SHA-1 each)."""
    return redis.register_script(_ADMIT), redis.register_script(_RELEASE_AND_RECORD)


def _finish(
    breaker: CircuitBreaker,
    result: GatewayResult,
    started: float,
    *,
    lease: tuple[Bulkhead, str] | None = None,
) -> GatewayResult:
    """The result with its wall-time latency, fed to the breaker; with ``lease`` (a call made
    in this thread), its slot given back in the same round trip."""
    latency_ms = round((time.monotonic() - started) * 1000)
    result = dataclasses.replace(result, latency_ms=latency_ms)
    if lease is None:
        _record(breaker, result)
        return result
    bulkhead, token = lease
    _quietly(lambda: _release_and_record(breaker, bulkhead, token, result.outcome in _HEALTHY))
    return result


def _release_and_record(
    breaker: CircuitBreaker, bulkhead: Bulkhead, token: str, healthy: bool
) -> None:
    """Give the slot of ``token`` back and feed the breaker, in one round trip."""
    _scripts(breaker.redis)[1](
        keys=[*breaker.keys, bulkhead.key],
        args=[*breaker.arguments, "success" if healthy else "failure", token],
    )


def _start(
    call: Callable[[GatewayAdapter], GatewayResult],
    adapter: GatewayAdapter,
    bulkhead: Bulkhead,
    token: str,
    *,
    name: str,
) -> Future[GatewayResult]:
    """Start ``call(adapter)`` in a daemon thread; the future holds its result or exception."""
    future: Future[GatewayResult] = Future()
    future.set_running_or_notify_cancel()
    # The thread sees the caller's context (the correlation id of the logs).
    context = contextvars.copy_context()

    def run() -> None:
        outcome: GatewayResult | BaseException
        try:
            result = call(adapter)
            if not isinstance(result, GatewayResult):
                raise TypeError(f"the gateway call returned {result!r}, not a GatewayResult")
            outcome = result
        except BaseException as exc:
            outcome = exc
        finally:
            # Before the result is published: whoever reads it finds the slot free already.
            _close_connection()
            _quietly(lambda: bulkhead.release(token))
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    threading.Thread(target=context.run, args=(run,), name=name, daemon=True).start()
    return future


def _call_inline(
    call: Callable[[GatewayAdapter], GatewayResult],
    adapter: GatewayAdapter,
    *,
    deadline: float,
    label: str,
) -> GatewayResult | str:
    """Run ``call(adapter)`` in this thread under ``CALL_DEADLINE``: its result, or the code of
    the answer to make up (``gateway_timeout``: it raised ``TimeoutError`` or answered at or
    after the deadline; ``gateway_exception``: it raised), logged under ``label`` as the thread
    path logs them. The caller gives the slot back."""
    context = CALL_DEADLINE.set(deadline)
    try:
        result = call(adapter)
        if not isinstance(result, GatewayResult):
            raise TypeError(f"the gateway call returned {result!r}, not a GatewayResult")
    except TimeoutError:
        logger.warning("%s got no answer in time", label)
        return GATEWAY_TIMEOUT
    except Exception:
        logger.exception("%s raised", label)
        return GATEWAY_EXCEPTION
    finally:
        CALL_DEADLINE.reset(context)
    if time.monotonic() >= deadline:
        # the caller has given up by now, as it would on a thread
        logger.warning("%s got no answer in time", label)
        return GATEWAY_TIMEOUT
    return result


def _close_connection() -> None:
    """Close this thread's database connection (each call thread opens its own)."""
    try:
        connection.close()
    except Exception:
        logger.exception("closing a gateway call thread's database connection failed")


def _unsure(op: Operation) -> Outcome:
    """What an interrupted call means: a lookup changed nothing, anything else may have."""
    return Outcome.RETRYABLE_ERROR if op is Operation.LOOKUP else Outcome.UNKNOWN


def _made_up(
    gateway: str, op: Operation, reference: str, outcome: Outcome, code: str
) -> GatewayResult:
    return GatewayResult(
        outcome=outcome,
        gateway=gateway,
        operation=op,
        reference=reference,
        decline_code=code,
        message=MESSAGES[code],
    )


def _record(breaker: CircuitBreaker, result: GatewayResult) -> None:
    """Feed the breaker; a Redis error here must not lose the gateway's answer."""
    if result.outcome in _HEALTHY:
        _quietly(breaker.record_success)
    else:
        _quietly(breaker.record_failure)


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except RedisError:
        logger.exception("resilience bookkeeping in Redis failed")
