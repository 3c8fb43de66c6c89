"""make simulate: a seeded, deterministic simulation of payments under stacked faults.

    make simulate                          # 500 seeds (what CI runs)
    make simulate SEEDS=100000             # a long run
    make simulate SEEDS=500 JOBS=1         # in one process (default: one process per CPU)
    make simulate SEED=1234                # replay one seed, printing its steps
    .venv/bin/python -m embedded bench simulate --seeds 500 --first 0 --jobs 2

Seeds are independent, so ``--jobs N`` shares them among N processes (job K runs every N-th
seed from the K-th), each on a database (``aegispay_sim_K``) and a Redis database (the given
one plus K) of its own, and adds up their reports.

In the spirit of FoundationDB's simulation testing and TigerBeetle's VOPR: one seed decides
everything that happens in a scenario, so any failure replays exactly from its seed.

**What runs.** AegisPay's real services, gateway-call path (payments/gateway.py), reconciler
and outbox relay, on the real PostgreSQL and Redis (a database of its own, ``aegispay_sim``).
Celery is replaced by a seeded scheduler in this process: the tasks' ``delay`` puts a message
on the scheduler's queue, and each step the scheduler picks which message runs next (any
order, any interleaving with merchant operations), may deliver a message twice, and may
abandon a run between any two of its steps (locked, planned, sent, recorded) as a killed
worker leaves it: the payment's lock stays held until "time passes", and the message is
redelivered.

**Faults.** Two simulated gateways (in-memory ledgers, registered as ``sandbox_a`` and
``sandbox_b``) whose every call is decided by the seed: approve, decline, a retryable error
before or after taking the operation, a timeout before or after taking it, lookup errors and
timeouts, lookups that find nothing, latency. Around them: a breaker forced open (and breakers
that open by themselves: fault rates go well above the threshold), a full bulkhead, Redis
errors on the payment lock, breaker, bulkhead and routing-metrics calls, a lost database
connection between two steps of a run.

**Merchant and staff operations** interleave with all of it: create (automatic or manual
capture), partial and full capture, cancel, several refunds, staff retry.

**The oracle**, checked once the faults are healed and the reconciler has run to quiescence:
at most one gateway charge per payment; each gateway's ledger agrees with
``amount_authorized``, ``amount_captured`` and ``amount_refunded``; no payment is failed,
cancelled or expired while a gateway holds its funds; ``0 <= refunded <= captured <=
authorized <= amount``; events replay to the stored row; every payment is terminal or
legitimately waiting (authorised for a manual capture) with no operation left open; every
event reached every in-process consumer exactly once (one applied mark per consumer, one
audit row, one webhook delivery). On a violation it prints the seed, the steps and
the one-line command that replays it, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import benchdb


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=500, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, default=None, help="replay this one seed, verbosely")
    parser.add_argument("--verbose", action="store_true", help="print every scenario's steps")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes sharing the seeds, each on a database and a Redis database of its own "
        "(default: one per CPU)",
    )
    # Set by the coordinator for each job: run every N-th seed from the K-th ("K/N") and write
    # the job's report, as JSON, to this file.
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--report", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the coordinator: several jobs side by side (it needs no Django of its own) ---


def job_redis_url(url: str, job: int) -> str:
    """Job ``job``'s Redis: the database after the given one by ``job`` (breaker, bulkhead and
    lock keys are per gateway and per payment, so two jobs must never share a database)."""
    parts = urlsplit(url or "redis://127.0.0.1:6379/1")
    base = int(parts.path.strip("/") or 0)
    if base + job > 15:
        raise SystemExit(f"simulate: too many jobs for Redis databases {base}-15 of {url}")
    return urlunsplit(parts._replace(path=f"/{base + job}"))


def coordinate(args: argparse.Namespace) -> int:
    """Run ``args.jobs`` copies of this script, job K taking seeds first+K, first+K+jobs, ...
    on database ``aegispay_sim_K`` and its own Redis database, then add up their reports.
    A scenario depends only on its seed, so which job runs it changes nothing."""
    jobs = args.jobs
    database = os.environ.get("BENCH_DATABASE_NAME", "aegispay_sim")
    reports = Path(tempfile.mkdtemp(prefix="aegispay-simulate-"))
    started = time.monotonic()
    children = []
    for job in range(jobs):
        env = dict(os.environ)
        env["BENCH_DATABASE_NAME"] = f"{database}_{job}"
        env["REDIS_URL"] = job_redis_url(os.environ.get("REDIS_URL", ""), job)
        argv = [sys.executable, __file__, "--seeds", str(args.seeds), "--first", str(args.first)]
        argv += ["--jobs", "1", "--shard", f"{job}/{jobs}", "--report", str(reports / str(job))]
        argv += ["--verbose"] if args.verbose else []
        children.append(subprocess.Popen(argv, env=env))
    interrupted = False
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    while True:
        try:
            for child in children:
                child.wait()
            break
        except KeyboardInterrupt:
            # Each job stops after its current scenario and reports what it finished.
            interrupted = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
    results = []
    for job, child in enumerate(children):
        path = reports / str(job)
        if not path.exists():
            print(f"simulate: job {job} ended (exit {child.returncode}) without a report")
            return 1
        results.append(json.loads(path.read_text()))
        path.unlink()
    reports.rmdir()
    return report(args.first, results, time.monotonic() - started, interrupted=interrupted)


def report(first: int, results: list[dict[str, Any]], elapsed: float, *, interrupted: bool) -> int:
    """Add up the jobs' results; ``elapsed`` is the whole run's wall time."""
    jobs = len(results)
    done = sum(r["done"] for r in results)
    failed = sum(r["failed"] for r in results)
    covered: Counter[str] = Counter()
    for r in results:
        covered.update(r["covered"])
    if interrupted:
        # Job K finished seeds first+K, first+K+jobs, ...: all seeds below this one are done.
        complete = first + jobs * min(r["done"] for r in results)
        print(f"\ninterrupted: {done} seeds finished; every seed from {first} to {complete - 1}")
    rate = done / elapsed if elapsed else 0.0
    print(
        f"\nRESULT: {'FAIL' if failed else 'PASS'}: {done} seeds, {failed} with violations, "
        f"{elapsed:.1f} s, {rate:.1f} scenarios/s ({jobs} job{'s' if jobs > 1 else ''})"
    )
    print("faults and paths covered: " + ", ".join(f"{k}={v}" for k, v in sorted(covered.items())))
    return 1 if failed or not done else 0


if __name__ == "__main__":
    _ARGS = arguments()
    if _ARGS.seed is None and _ARGS.jobs > 1:
        sys.exit(coordinate(_ARGS))

# Time-based resilience state must not depend on how fast a scenario runs: breakers neither
# forget failures nor half-open on their own during a scenario; every scenario starts clean.
os.environ.update(
    {
        "BREAKER_WINDOW_SECONDS": "86400",
        "BREAKER_OPEN_SECONDS": "86400",
        "BULKHEAD_LIMIT": "4",
        "CELERY_QUEUE": "aegispay-simulate",
        # Each scenario's merchant has a webhook endpoint on 127.0.0.1 (never called).
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "LOG_LEVEL": "CRITICAL",
    }
)
benchdb.setup("aegispay_sim")

from django.conf import settings  # noqa: E402
from django.db import DatabaseError, OperationalError, connection  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_redis import get_redis_connection  # noqa: E402
from redis.exceptions import RedisError  # noqa: E402

from gateways import registry, resilience  # noqa: E402
from gateways.base import (  # noqa: E402
    CaptureRequest,
    ChargeRequest,
    GatewayResult,
    Operation,
    Outcome,
    RefundRequest,
    VoidRequest,
)
from gateways.breaker import breaker_for  # noqa: E402
from gateways.bulkhead import bulkhead_for  # noqa: E402
from outbox import tasks as outbox_tasks  # noqa: E402
from outbox.consumers import outbox_consumers_run  # noqa: E402
from outbox.models import OutboxConsumerMark  # noqa: E402
from outbox.registry import consumer_names  # noqa: E402
from outbox.relay import outbox_relay_drain  # noqa: E402
from payments import gateway, locks, merchants, services, tasks  # noqa: E402
from payments.errors import PaymentError  # noqa: E402
from payments.models import (  # noqa: E402
    OPEN_ATTEMPT_STATUSES,
    Payment,
    PaymentAttempt,
    PaymentAuditEntry,
    PaymentEvent,
    Refund,
)
from payments.projections.payment import differences  # noqa: E402
from routing.models import MerchantRouting  # noqa: E402
from webhooks import tasks as webhook_tasks  # noqa: E402
from webhooks.models import WebhookDelivery  # noqa: E402
from webhooks.services import webhook_endpoint_create  # noqa: E402

GATEWAYS = ("sandbox_a", "sandbox_b")
LOCK_KEY = "aegispay:lock:payment:{}"
MAX_PAYMENTS = 3
ALLOWED_AT_REST = {"completed", "refunded", "partially_refunded", "cancelled", "failed", "expired"}


class SimulatedRedisError(RedisError):
    """A Redis error the simulation injected (any other Redis error is a finding)."""


class SimulatedConnectionLoss(OperationalError):
    """A lost database connection the simulation injected (any other database error in a task
    is a finding)."""


INJECTED = (SimulatedRedisError, SimulatedConnectionLoss)


class WorkerCrash(BaseException):
    """A worker killed between two steps of a run (BaseException: nothing may catch it)."""


# --- the simulated gateways ---


@dataclass
class Charge:
    order: str
    gateway_reference: str
    amount: int
    captured: int = 0
    refunded: int = 0
    voided: bool = False


@dataclass
class Ledger:
    """One gateway account's books: what it took, by operation and reference."""

    charges: dict[str, Charge] = field(default_factory=dict)  # by gateway_reference
    taken: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    declined: dict[tuple[str, str], str] = field(default_factory=dict)


class SimGateway:
    """A gateway account whose every call's behaviour is drawn from the scenario's seed.

    Idempotent by reference like a real one: an operation taken once is never taken twice,
    and a call repeating its reference answers for what was taken. Faults: ``error_before`` /
    ``timeout_before`` take nothing; ``error_after`` / ``timeout_after`` take the operation
    and then fail (a 5xx after the charge; an answer lost on the way back); ``decline``.
    """

    # Run in the worker's own thread, as the sandbox and the SDK adapters are
    # (gateways/resilience.py): its timeouts are raised, never slept.
    enforces_deadline = True

    def __init__(self, name: str, world: World) -> None:
        self.name = name
        self.world = world
        self.ledger = Ledger()

    # The GatewayAdapter protocol.

    def authorize(self, request: ChargeRequest) -> GatewayResult:
        def take() -> GatewayResult:
            key = ("authorize", request.reference)
            if key not in self.ledger.taken:
                ref = f"ch_{self.name}_{len(self.ledger.charges) + 1}"
                self.ledger.charges[ref] = Charge(request.order_reference, ref, request.amount)
                self.ledger.taken[key] = (ref, request.amount)
            ref, amount = self.ledger.taken[key]
            return self._ok(Operation.AUTHORIZE, request.reference, ref, amount)

        return self._call(Operation.AUTHORIZE, request.reference, take, can_decline=True)

    def capture(self, request: CaptureRequest) -> GatewayResult:
        def take() -> GatewayResult:
            charge = self.ledger.charges.get(request.gateway_reference)
            key = ("capture", request.reference)
            if key not in self.ledger.taken:
                if charge is None or charge.voided:
                    return self._refuse(Operation.CAPTURE, request.reference, "not_capturable")
                if charge.captured + request.amount > charge.amount:
                    return self._refuse(Operation.CAPTURE, request.reference, "amount_exceeded")
                charge.captured += request.amount
                self.ledger.taken[key] = (charge.gateway_reference, request.amount)
            ref, amount = self.ledger.taken[key]
            return self._ok(Operation.CAPTURE, request.reference, ref, amount)

        return self._call(Operation.CAPTURE, request.reference, take)

    def void(self, request: VoidRequest) -> GatewayResult:
        def take() -> GatewayResult:
            charge = self.ledger.charges.get(request.gateway_reference)
            key = ("void", request.reference)
            if key not in self.ledger.taken:
                if charge is None or charge.voided or charge.captured:
                    return self._refuse(Operation.VOID, request.reference, "not_voidable")
                charge.voided = True
                self.ledger.taken[key] = (charge.gateway_reference, charge.amount)
            ref, amount = self.ledger.taken[key]
            return self._ok(Operation.VOID, request.reference, ref, amount)

        return self._call(Operation.VOID, request.reference, take)

    def refund(self, request: RefundRequest) -> GatewayResult:
        def take() -> GatewayResult:
            charge = self.ledger.charges.get(request.gateway_reference)
            key = ("refund", request.reference)
            if key not in self.ledger.taken:
                if charge is None or charge.refunded + request.amount > charge.captured:
                    return self._refuse(Operation.REFUND, request.reference, "amount_exceeded")
                charge.refunded += request.amount
                self.ledger.taken[key] = (charge.gateway_reference, request.amount)
            ref, amount = self.ledger.taken[key]
            return self._ok(Operation.REFUND, request.reference, ref, amount)

        return self._call(Operation.REFUND, request.reference, take)

    def lookup(self, reference: str, operation: str = "authorize") -> GatewayResult:
        fault = self.world.draw_lookup_fault(self.name)
        if fault == "timeout":
            raise TimeoutError("simulated lookup timeout")
        if fault == "error":
            return self._made(Operation.LOOKUP, reference, Outcome.RETRYABLE_ERROR, "sim_error")
        key = (operation, reference)
        if key in self.ledger.taken:
            ref, amount = self.ledger.taken[key]
            return self._ok(Operation.LOOKUP, reference, ref, amount)
        if key in self.ledger.declined:
            return self._made(Operation.LOOKUP, reference, Outcome.DECLINED, "declined")
        self.world.covered["lookup_not_found"] += 1
        return self._made(Operation.LOOKUP, reference, Outcome.NOT_FOUND, None)

    # Plumbing.

    def _call(
        self,
        op: Operation,
        reference: str,
        take: Callable[[], GatewayResult],
        *,
        can_decline: bool = False,
    ) -> GatewayResult:
        key = (str(op), reference)
        fault = self.world.draw_fault(self.name, op, can_decline=can_decline)
        if fault == "timeout_before":
            raise TimeoutError("simulated timeout before the gateway took it")
        if fault == "error_before":
            return self._made(op, reference, Outcome.RETRYABLE_ERROR, "sim_error")
        if key in self.ledger.declined:
            return self._refuse(op, reference, self.ledger.declined[key])
        if fault == "decline" and key not in self.ledger.taken:
            return self._refuse(op, reference, "card_declined")
        result = take()
        if fault == "timeout_after":
            raise TimeoutError("simulated timeout after the gateway took it")
        if fault == "error_after":
            return self._made(op, reference, Outcome.RETRYABLE_ERROR, "sim_error")
        return result

    def _ok(self, op: Operation, reference: str, ref: str, amount: int) -> GatewayResult:
        return GatewayResult(
            outcome=Outcome.SUCCEEDED,
            gateway=self.name,
            operation=op,
            reference=reference,
            gateway_reference=ref,
            amount=amount,
            currency="USD",
        )

    def _refuse(self, op: Operation, reference: str, code: str) -> GatewayResult:
        self.ledger.declined[(str(op), reference)] = code
        return self._made(op, reference, Outcome.DECLINED, code)

    def _made(
        self, op: Operation, reference: str, outcome: Outcome, code: str | None
    ) -> GatewayResult:
        return GatewayResult(
            outcome=outcome, gateway=self.name, operation=op, reference=reference, decline_code=code
        )


# --- the world of one scenario ---


@dataclass
class Message:
    task: str
    arg: str
    retries: int = 0


GATEWAY_FAULTS = ("ok", "decline", "error_before", "error_after", "timeout_before", "timeout_after")


@dataclass
class World:
    """Everything one seed decides, and what happened."""

    seed: int
    rng: random.Random = field(init=False)
    queue: list[Message] = field(default_factory=list)
    payments: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    covered: Counter[str] = field(default_factory=Counter)
    fault_weights: dict[str, list[int]] = field(default_factory=dict)
    lookup_fault_rate: float = 0.0
    redis_fault_rate: float = 0.0
    crash_at: str | None = None
    lose_db_at: str | None = None
    held_slots: dict[str, list[str]] = field(default_factory=dict)
    crashed_locks: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    healthy: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def log(self, text: str) -> None:
        self.steps.append(text)

    def label(self, payment_id: str) -> str:
        return f"p{self.payments.index(payment_id)}" if payment_id in self.payments else payment_id

    # Faults, drawn in call order from the one generator.

    def draw_fault(self, name: str, op: Operation, *, can_decline: bool) -> str:
        if self.healthy:
            return "ok"
        weights = self.fault_weights[name]
        fault = self.rng.choices(GATEWAY_FAULTS, weights=weights)[0]
        if fault == "decline" and not can_decline:
            fault = "ok"
        if self.rng.random() < 0.1:
            time.sleep(0.001)
            self.covered["latency"] += 1
        self.covered[f"gateway_{fault}"] += 1
        return fault

    def draw_lookup_fault(self, name: str) -> str:
        if self.healthy or self.rng.random() >= self.lookup_fault_rate:
            return "ok"
        fault = self.rng.choice(("error", "timeout"))
        self.covered[f"lookup_{fault}"] += 1
        return fault

    def redis_fails(self, what: str) -> bool:
        if self.healthy or self.redis_fault_rate == 0 or self.rng.random() >= self.redis_fault_rate:
            return False
        self.covered[f"redis_error_{what}"] += 1
        return True

    def checkpoint(self, step: str) -> None:
        if self.crash_at == step:
            self.crash_at = None
            self.covered[f"crash_after_{step}"] += 1
            raise WorkerCrash(step)
        if self.lose_db_at == step:
            self.lose_db_at = None
            self.covered[f"db_lost_after_{step}"] += 1
            connection.close()
            raise SimulatedConnectionLoss("simulated lost database connection")


WORLD: World | None = None


def world() -> World:
    if WORLD is None:
        raise RuntimeError("no scenario is running")
    return WORLD


# --- wiring the simulation into the real code, once per process ---


def install() -> None:
    """Route task sends to the scheduler and put Redis fault points on the calls that the
    gateway-call path makes to Redis (lock, the breaker and bulkhead's admission and release,
    routing metrics). The outbox's
    own kicks and webhook sends are not queued: the oracle drains the relay and the consumers
    itself, and sends no webhook (it counts the deliveries)."""
    for name in ("payment_process", "payment_operation_execute", "refund_execute"):
        task = getattr(tasks, name)
        task.delay = lambda arg, correlation_id="", _n=name: world().queue.append(Message(_n, arg))
    for task in (
        outbox_tasks.outbox_relay,
        outbox_tasks.outbox_consumers,
        webhook_tasks.webhook_delivery_send,
    ):
        task.delay = lambda *args, **kwargs: None

    def failing(what: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if world().redis_fails(what):
                raise SimulatedRedisError(f"simulated Redis error on {what}")
            return real(*args, **kwargs)

        return call

    # A gateway call's bookkeeping is two scripts (gateways/resilience.py): the breaker's check
    # with the bulkhead's slot before the call ("admit"), the slot's release with the breaker's
    # feed after it ("release"); breaker.allow and bulkhead.acquire are not on that path.
    resilience._admit = failing("admit", resilience._admit)
    resilience._release_and_record = failing("release", resilience._release_and_record)
    gateway.record_result = failing("metrics", gateway.record_result)
    gateway.payment_gateway_lock = failing("lock", locks.payment_gateway_lock)


RUNS: dict[str, Callable[[Message, World], gateway.Next]] = {
    "payment_process": lambda m, w: gateway.authorize_run(
        payment_id=m.arg, retries=m.retries, checkpoint=w.checkpoint
    ),
    "payment_operation_execute": lambda m, w: gateway.operation_run(
        attempt_id=m.arg, retries=m.retries, checkpoint=w.checkpoint
    ),
    "refund_execute": lambda m, w: gateway.refund_run(
        refund_id=m.arg, retries=m.retries, checkpoint=w.checkpoint
    ),
}


def payment_of(message: Message) -> str:
    if message.task == "payment_process":
        return message.arg
    if message.task == "refund_execute":
        return Refund.objects.values_list("payment_id", flat=True).get(pk=message.arg)
    return PaymentAttempt.objects.values_list("payment_id", flat=True).get(pk=message.arg)


def deliver(w: World, index: int) -> None:
    """Run one message as a worker would: done, retried, redelivered after a crash, or lost
    when the task failed (acks late: a failed task is acknowledged; the reconciler finds it)."""
    message = w.queue.pop(index)
    pid = payment_of(message)
    what = f"{message.task}({w.label(pid)}, try {message.retries})"
    try:
        step = RUNS[message.task](message, w)
    except WorkerCrash as crash:
        # Killed: the lock stays until it expires ("time passes"); the message comes back.
        get_redis_connection("default").set(LOCK_KEY.format(pid), "crashed")
        w.crashed_locks.add(pid)
        w.queue.append(message)
        w.log(f"{what}: worker killed after {crash}")
        return
    except INJECTED as error:
        w.log(f"{what}: task failed ({type(error).__name__}), message acknowledged")
        return
    except (RedisError, DatabaseError) as error:
        w.unexpected.append(f"{what}: {type(error).__name__}: {error}")
        w.log(f"{what}: task failed unexpectedly ({type(error).__name__}: {error})")
        return
    w.log(f"{what}: {step}")
    if step is not gateway.Next.DONE:
        w.queue.append(replace(message, retries=message.retries + 1))


# --- merchant and staff operations ---


def merchant_ops(w: World, merchant: Any) -> dict[str, Callable[[], str]]:
    def pick() -> Payment | None:
        if not w.payments:
            return None
        return Payment.objects.get(pk=w.rng.choice(w.payments))

    def amount_of(limit: int) -> int | None:
        if limit <= 0 or w.rng.random() < 0.5:
            return None
        return w.rng.randint(1, limit)

    def create() -> str:
        payment = services.payment_create(
            merchant=merchant,
            amount=w.rng.choice((100, 999, 2000, 5000)),
            currency="USD",
            payment_method={"type": "card", "token": "tok_visa"},
            capture_method=w.rng.choice(("automatic", "manual")),
            actor="sim",
        )
        w.payments.append(payment.id)
        return f"create {w.label(payment.id)} {payment.amount} {payment.capture_method}"

    def capture() -> str:
        p = pick()
        if p is None:
            return "capture: no payment"
        amount = amount_of(p.amount_authorized)
        services.payment_capture(payment_id=p.id, actor="sim", amount=amount)
        return f"capture {w.label(p.id)} {amount or 'all'}"

    def cancel() -> str:
        p = pick()
        if p is None:
            return "cancel: no payment"
        services.payment_cancel(payment_id=p.id, actor="sim")
        return f"cancel {w.label(p.id)}"

    def refund() -> str:
        p = pick()
        if p is None:
            return "refund: no payment"
        amount = amount_of(p.amount_captured - p.amount_refunded)
        services.refund_create(payment_id=p.id, actor="sim", amount=amount)
        return f"refund {w.label(p.id)} {amount or 'rest'}"

    def retry() -> str:
        p = pick()
        if p is None:
            return "staff retry: no payment"
        services.payment_retry(payment_id=p.id, actor="staff:sim")
        return f"staff retry {w.label(p.id)}"

    return {
        "create": create,
        "capture": capture,
        "cancel": cancel,
        "refund": refund,
        "retry": retry,
    }


# --- environment faults ---


def open_breaker(w: World) -> str:
    name = w.rng.choice(GATEWAYS)
    breaker = breaker_for(name)
    for _ in range(settings.BREAKER_MINIMUM_CALLS):
        breaker.record_failure()
    w.covered["breaker_forced_open"] += 1
    return f"breaker {name} forced open"


def fill_bulkhead(w: World) -> str:
    name = w.rng.choice(GATEWAYS)
    held = w.held_slots.setdefault(name, [])
    while (token := bulkhead_for(name).acquire()) is not None:
        held.append(token)
    w.covered["bulkhead_full"] += 1
    return f"bulkhead {name} filled"


def release(w: World) -> str:
    """Heal the gateways: breakers closed, every bulkhead slot free. Besides the slots this
    scenario filled, that drops the leases whose release a Redis error lost ("release"
    faults): in production each expires after ``BULKHEAD_LEASE_SECONDS``, but a scenario's
    clock does not move Redis's, so healing lets that time pass for them. No call is in flight
    here (a scenario runs one step at a time)."""
    for name, tokens in w.held_slots.items():
        for token in tokens:
            bulkhead_for(name).release(token)
    w.held_slots.clear()
    for name in GATEWAYS:
        breaker_for(name).reset()
        bulkhead_for(name).reset()
    return "breakers closed, bulkheads released"


def redis_window(w: World) -> str:
    w.redis_fault_rate = 0.0 if w.redis_fault_rate else w.rng.choice((0.2, 0.5, 1.0))
    return f"redis fault rate {w.redis_fault_rate}"


def time_passes(w: World) -> dict[str, int]:
    """Crashed workers' locks expire and the reconciler sweeps, as of a later time."""
    redis = get_redis_connection("default")
    for pid in sorted(w.crashed_locks, key=w.label):
        redis.delete(LOCK_KEY.format(pid))
    w.crashed_locks.clear()
    queued = tasks.reconcile(timezone.now() + timedelta(days=30))
    w.covered["reconcile"] += 1
    w.log(f"time passes: locks expired, reconcile queued {queued}")
    return queued


# --- one scenario ---


def scenario(seed: int, sims: dict[str, SimGateway]) -> tuple[World, list[str]]:
    global WORLD
    w = World(seed)
    WORLD = w
    for sim in sims.values():
        sim.world = w
        sim.ledger = Ledger()
    for name in GATEWAYS:
        breaker_for(name).reset()
        bulkhead_for(name).reset()
        # Per gateway: weights of ok, decline, error/timeout before/after taking.
        badness = w.rng.choice((0, 1, 3, 8))
        w.fault_weights[name] = [20, 2, badness, badness, badness, badness]
    w.lookup_fault_rate = w.rng.choice((0.0, 0.2, 0.5))
    merchant, _key = merchants.merchant_create(name=f"sim-{seed}", gateways=list(GATEWAYS))
    MerchantRouting.objects.create(merchant_id=merchant.id, strategy="priority")
    webhook_endpoint_create(
        merchant_id=merchant.id, url="http://127.0.0.1:9/hooks", events=["payment.*", "refund.*"]
    )
    ops = merchant_ops(w, merchant)
    w.log(ops["create"]())

    actions: list[tuple[int, str, Callable[[], str]]] = [
        (8, "create", lambda: ops["create"]() if len(w.payments) < MAX_PAYMENTS else "enough"),
        (5, "capture", ops["capture"]),
        (3, "cancel", ops["cancel"]),
        (6, "refund", ops["refund"]),
        (2, "staff retry", ops["retry"]),
        (3, "breaker", lambda: open_breaker(w)),
        (2, "bulkhead", lambda: fill_bulkhead(w)),
        (3, "heal", lambda: release(w)),
        (2, "redis", lambda: redis_window(w)),
        (3, "crash", lambda: crash_next(w)),
        (2, "db", lambda: lose_db_next(w)),
        (3, "time", lambda: f"{sum(time_passes(w).values())} queued"),
    ]
    weights = [weight for weight, _, _ in actions]
    for _ in range(w.rng.randint(20, 80)):
        if w.queue and w.rng.random() < 0.6:
            index = w.rng.randrange(len(w.queue))
            if w.rng.random() < 0.1:
                w.queue.append(w.queue[index])
                w.covered["duplicate_delivery"] += 1
            deliver(w, index)
            continue
        name, action = w.rng.choices(actions, weights=weights)[0][1:]
        try:
            w.log(action())
        except PaymentError as refused:
            w.log(f"{name}: refused, {refused.code}")
        except INJECTED as error:
            w.log(f"{name}: failed, {type(error).__name__}")
    quiesce(w)
    return w, check(w, sims)


def crash_next(w: World) -> str:
    w.crash_at = w.rng.choice(("locked", "planned", "sent", "recorded"))
    return f"the next run's worker dies after {w.crash_at}"


def lose_db_next(w: World) -> str:
    w.lose_db_at = w.rng.choice(("locked", "planned", "sent", "recorded"))
    return f"the next run loses its database connection after {w.lose_db_at}"


def quiesce(w: World, rounds: int = 40) -> None:
    """Heal everything, then deliver and reconcile until nothing is left to do."""
    w.healthy = True
    w.crash_at = w.lose_db_at = None
    w.redis_fault_rate = 0.0
    w.log("--- healed: deliver and reconcile to quiescence ---")
    release(w)
    for _ in range(rounds):
        tasks.payments_settle_captures.run()
        if not any(time_passes(w).values()) and not w.queue:
            return
        for _ in range(500):
            if not w.queue:
                break
            deliver(w, 0)
    w.log(f"did not quiesce in {rounds} rounds")


def check(w: World, sims: dict[str, SimGateway]) -> list[str]:
    """The oracle. Returns the violations (none when all holds)."""
    problems = [f"unexpected error: {text}" for text in w.unexpected]
    outbox_relay_drain()
    outbox_consumers_run()
    for pid in w.payments:
        p = Payment.objects.get(pk=pid)
        label = w.label(pid)
        charges = [
            c for sim in sims.values() for c in sim.ledger.charges.values() if c.order == pid
        ]
        if len(charges) > 1:
            problems.append(f"{label}: charged {len(charges)} times: {charges}")
        charge = charges[0] if charges else None
        booked = (
            (charge.amount, charge.captured, charge.refunded) if charge is not None else (0, 0, 0)
        )
        stored = (p.amount_authorized, p.amount_captured, p.amount_refunded)
        if charge is not None and charge.voided and p.status not in ("cancelled", "expired"):
            problems.append(f"{label}: voided at the gateway but {p.status}")
        if stored != booked:
            problems.append(f"{label}: authorized/captured/refunded {stored}, gateway {booked}")
        if p.status in ("failed", "cancelled", "expired") and charge is not None:
            holds = not charge.voided and (not charge.captured or charge.refunded < charge.captured)
            if holds:
                problems.append(f"{label}: {p.status} while the gateway holds {charge}")
        if not 0 <= p.amount_refunded <= p.amount_captured <= p.amount_authorized <= p.amount:
            problems.append(f"{label}: money invariant broken {stored} of {p.amount}")
        if diff := differences(p):
            problems.append(f"{label}: events do not replay to the row: {diff}")
        waiting = p.status == "authorized" and p.capture_method == "manual"
        if p.status not in ALLOWED_AT_REST and not waiting:
            problems.append(f"{label}: stuck in {p.status}")
        if p.attempts.filter(status__in=OPEN_ATTEMPT_STATUSES).exists():
            problems.append(f"{label}: an attempt is still open")
        if p.refunds.filter(status="pending").exists():
            problems.append(f"{label}: a refund is still pending")
        events = Counter(PaymentEvent.objects.filter(payment_id=pid).values_list("id", flat=True))
        audited = Counter(
            PaymentAuditEntry.objects.filter(payment_id=pid).values_list("event_id", flat=True)
        )
        delivered = Counter(
            WebhookDelivery.objects.filter(aggregate_id=pid).values_list("event_id", flat=True)
        )
        if audited != events:
            problems.append(f"{label}: read models applied {audited}, events {events}")
        if delivered != events:
            problems.append(f"{label}: webhook deliveries {delivered}, events {events}")
        for consumer in consumer_names():
            marks = OutboxConsumerMark.objects.filter(consumer=consumer, aggregate_id=pid)
            applied = Counter(
                marks.filter(applied_at__isnull=False).values_list("event_id", flat=True)
            )
            if applied != events:
                problems.append(f"{label}: consumer {consumer} applied {applied}")
    w.covered["payments"] += len(w.payments)
    w.covered.update(
        f"status_{s}"
        for s in Payment.objects.filter(pk__in=w.payments).values_list("status", flat=True)
    )
    return problems


# --- the run ---


def main(args: argparse.Namespace) -> int:
    if args.seed is not None:
        seeds: Sequence[int] = [args.seed]
    else:
        job, jobs = (int(part) for part in args.shard.split("/"))
        seeds = range(args.first + job, args.first + args.seeds, jobs)
    verbose = args.verbose or args.seed is not None
    prefix = f"[job {args.shard}] " if args.report else ""
    sims = {name: SimGateway(name, World(0)) for name in GATEWAYS}
    for sim in sims.values():
        registry.register(sim)
    install()
    benchdb.empty_tables()
    covered: Counter[str] = Counter()
    started = time.monotonic()
    failed = 0
    # A long run in the background may start with SIGINT ignored; SIGTERM stops it cleanly too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    done = 0
    interrupted = False
    try:
        for seed in seeds:
            w, problems = scenario(seed, sims)
            done += 1
            covered.update(w.covered)
            if verbose or problems:
                # One write per scenario, so that jobs sharing a terminal do not interleave.
                lines = [f"\n=== seed {seed}: {'VIOLATION' if problems else 'ok'} ==="]
                lines += [f"  {step}" for step in w.steps]
                if problems:
                    failed += 1
                    lines += ["violations:", *(f"  {problem}" for problem in problems)]
                    lines += [f"replay: make simulate SEED={seed}"]
                print("\n".join(lines), flush=True)
            if done % 100 == 0:
                rate = done / (time.monotonic() - started)
                print(
                    f"{prefix}{done} seeds, {rate:.1f} scenarios/s, {failed} with violations",
                    flush=True,
                )
            if done % 1000 == 0:
                benchdb.empty_tables()
    except KeyboardInterrupt:
        # A long run stopped by hand still reports the seeds it finished.
        interrupted = True
    result = {"done": done, "failed": failed, "covered": dict(covered)}
    if args.report:
        Path(args.report).write_text(json.dumps(result))
        return 1 if failed else 0
    first = args.first if args.seed is None else args.seed
    return report(first, [result], time.monotonic() - started, interrupted=interrupted)


if __name__ == "__main__":
    sys.exit(main(_ARGS))
