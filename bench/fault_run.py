"""Fault run: many payments through two faulty sandbox gateways, then check nothing went wrong.

    make fault-run                       # 1,000 payments, the defaults below
    .venv/bin/python -m embedded bench fault_run --payments 200 --workers 2

It uses its own database (``aegispay_bench`` on the configured PostgreSQL, created and migrated
here, emptied at the start), starts real Celery worker processes, switches on the sandbox's
fault injection (seeded), creates the payments through the service the API uses, and acts as
beat (reconcile, settle) until every payment is in a terminal or deliberately waiting state or
the time limit passes. The faults stack, as they do in production:

* ``sandbox_a`` fails more often than the breaker's threshold (``--hot-error-rate``, default
  60% errors against a 50% threshold), so its breaker opens and stays in play;
* ``sandbox_b`` fails at ``--error-rate`` / ``--timeout-rate`` (20% / 10%);
* the bulkhead is small (``--bulkhead``, 2 calls per gateway) and every call has added
  latency, so bulkheads fill under the workers' concurrency;
* Redis goes away for ``--redis-outage`` seconds (``CLIENT PAUSE`` past the clients' socket
  timeout), twice, while payments are in flight: the lock, breaker, bulkhead and metrics calls
  fail, and so does the Celery broker.

Then it checks, and exits non-zero if any check fails:

* every payment is terminal (``completed``, ``failed``) or deliberately waiting (a manual
  capture, authorised, waits for the merchant): none stuck, no gateway attempt left open;
* no payment was charged twice (sandbox ledger: at most one authorize per payment, and one
  exactly when the payment holds an authorisation; none for a failed payment);
* no payment or event lost: one outbox row per event, and events replay to the stored state.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import benchdb

REPO = Path(__file__).resolve().parent.parent
os.environ["CELERY_QUEUE"] = "aegispay-bench"
# Fast retries and reconciliation: the run is about correctness under faults, not waiting.
BENCH_ENV = {
    "GATEWAY_RETRY_BASE_SECONDS": "0.2",
    "GATEWAY_RETRY_MAX_SECONDS": "2",
    "GATEWAY_RETRY_DEADLINE_SECONDS": "30",
    "RECONCILE_AFTER_SECONDS": "5",
    "RECONCILE_BACKOFF_MAX_SECONDS": "10",
    "GATEWAY_TIMEOUT_SECONDS": "2",
    "PAYMENT_LOCK_MARGIN_SECONDS": "1",
    "BREAKER_OPEN_SECONDS": "5",
    # A Redis that does not answer fails the call after a second instead of stalling it.
    "REDIS_TIMEOUT_SECONDS": "1",
    "REDIS_CONNECT_TIMEOUT_SECONDS": "1",
}
os.environ.update(BENCH_ENV)

TERMINAL = {"completed", "failed", "cancelled", "expired", "refunded"}


def start_workers(count: int, log_dir: Path) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        log = (log_dir / f"fault-run-worker-{index}.log").open("w")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "aegispay",
                    "worker",
                    "--loglevel",
                    "WARNING",
                    "--concurrency",
                    "4",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-Q",
                    "aegispay-bench,aegispay-bench.outbox",
                    "-n",
                    f"bench{index}@%h",
                ],
                cwd=REPO,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return workers


def redis_outage(redis: Any, seconds: float) -> None:
    """Make Redis answer nobody for ``seconds`` (longer than the clients' socket timeout)."""
    print(f"Redis outage: {seconds:.0f}s")
    redis.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")
    time.sleep(seconds)


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--timeout-rate", type=float, default=0.1)
    parser.add_argument("--hot-error-rate", type=float, default=0.6, help="sandbox_a's errors")
    parser.add_argument("--bulkhead", type=int, default=2, help="calls in flight per gateway")
    parser.add_argument("--latency-ms", type=int, default=30, help="added to every call")
    parser.add_argument("--redis-outage", type=float, default=4.0, help="seconds, twice")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--time-limit", type=float, default=600)
    args = parser.parse_args()
    os.environ["BULKHEAD_LIMIT"] = str(args.bulkhead)

    benchdb.setup("aegispay_bench")
    from django.db.models import Q
    from django.test.utils import override_settings

    from aegispay.celery import app as celery_app
    from gateways.chaos import ChaosConfig, clear_chaos, set_chaos
    from gateways.models import SandboxLedgerEntry, SandboxRequest
    from outbox.models import OutboxMessage
    from payments.models import Payment, PaymentAttempt, PaymentEvent

    def unsettled():
        """Payments neither terminal nor deliberately waiting (a manual capture authorised)."""
        waiting = Q(status="authorized", capture_method="manual")
        return Payment.objects.exclude(Q(status__in=TERMINAL) | waiting)

    from payments.merchants import merchant_create
    from payments.projections.payment import differences
    from payments.services import payment_create
    from payments.tasks import payments_reconcile, payments_settle_captures

    benchdb.empty_tables()
    celery_app.control.purge()
    from django_redis import get_redis_connection
    from redis.exceptions import RedisError

    redis = get_redis_connection("default")
    for key in redis.scan_iter("aegispay:breaker:*"):
        redis.delete(key)
    for key in redis.scan_iter("aegispay:bulkhead:*"):
        redis.delete(key)
    chaos = {
        "sandbox_a": ChaosConfig(error_rate=args.hot_error_rate, seed=args.seed),
        "sandbox_b": ChaosConfig(
            error_rate=args.error_rate, timeout_rate=args.timeout_rate, seed=args.seed + 1
        ),
    }
    for gateway, config in chaos.items():
        set_chaos(gateway, replace(config, added_latency_ms=args.latency_ms))
    log_dir = REPO / ".aegispay"
    log_dir.mkdir(exist_ok=True)
    workers = start_workers(args.workers, log_dir)
    started = time.monotonic()
    try:
        merchant, _key = merchant_create(name="Fault run", gateways=["sandbox_a", "sandbox_b"])
        for index in range(args.payments):
            payment_create(
                merchant=merchant,
                amount=1000 + index,
                currency="EUR",
                payment_method={"type": "card", "token": "tok_visa"},
                capture_method="manual" if index % 10 == 0 else "automatic",
                merchant_reference=f"fault-{index}",
                actor="bench",
            )
        created = time.monotonic() - started
        print(f"created {args.payments} payments in {created:.1f}s; processing under faults")
        deadline = started + args.time_limit
        processing = time.monotonic()
        outages = [processing + 3, processing + 12]
        with override_settings(**{k: float(v) for k, v in BENCH_ENV.items()}):
            while time.monotonic() < deadline:
                if outages and time.monotonic() >= outages[0]:
                    outages.pop(0)
                    redis_outage(redis, args.redis_outage)
                    continue
                try:
                    if not outages and unsettled().count() == 0:
                        break
                    payments_reconcile()  # what beat does, every couple of seconds here
                    payments_settle_captures()
                except RedisError:
                    print("beat: Redis unavailable, sweeping again later")
                time.sleep(2)
        elapsed = time.monotonic() - started
    finally:
        stop_workers(workers)
        clear_chaos()

    statuses = Counter(Payment.objects.values_list("status", flat=True))
    stuck = unsettled().count()
    open_attempts = PaymentAttempt.objects.filter(status__in=("pending", "unknown")).count()
    authorize_rows = Counter(
        SandboxLedgerEntry.objects.filter(operation="authorize").values_list(
            "order_reference", flat=True
        )
    )
    double = sum(1 for n in authorize_rows.values() if n > 1)
    held = set(Payment.objects.filter(amount_authorized__gt=0).values_list("pk", flat=True))
    charged = set(authorize_rows)
    failed_but_charged = len(
        set(Payment.objects.filter(status="failed").values_list("pk", flat=True)) & charged
    )
    uncharged_but_held = len(held - charged)
    charged_not_held = len(charged - held)
    events = PaymentEvent.objects.count()
    outbox = OutboxMessage.objects.count()
    mismatched = sum(1 for p in Payment.objects.iterator() if differences(p))
    lost = args.payments - Payment.objects.count()
    failures = Counter(
        Payment.objects.filter(status="failed").values_list("failure_code", flat=True)
    )
    injected = Counter(
        SandboxRequest.objects.filter(
            decline_code__in=("gateway_error", "gateway_timeout")
        ).values_list("operation", "decline_code")
    )
    refused = Counter(
        PaymentAttempt.objects.filter(
            error_code__in=("circuit_open", "bulkhead_full", "resilience_unavailable")
        ).values_list("error_code", flat=True)
    )
    print(f"finished in {elapsed:.1f}s with {args.workers} workers x 4 processes")
    print(f"faults injected (operation, fault): {dict(sorted(injected.items()))}")
    print(f"attempts refused before sending (not_sent): {dict(sorted(refused.items()))}")
    print(f"payments by status: {dict(sorted(statuses.items()))}")
    print(f"failure codes: {dict(sorted(failures.items()))}")
    print(f"stuck (not terminal or waiting): {stuck}; gateway attempts still open: {open_attempts}")
    print(f"lost payments: {lost}")
    print(f"double charges: {double}")
    print(
        f"failed but charged: {failed_but_charged}; held but not charged: {uncharged_but_held}; "
        f"charged but not held: {charged_not_held}"
    )
    print(
        f"events: {events}; outbox rows: {outbox}; "
        f"payments whose events do not replay: {mismatched}"
    )
    ok = (
        stuck
        == lost
        == double
        == failed_but_charged
        == uncharged_but_held
        == charged_not_held
        == mismatched
        == 0
        and events == outbox
    )
    print("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
