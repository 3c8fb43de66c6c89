"""Outbox relay: throughput to the event bus, and the lag from commit to publish under load.

    make relay-bench                                   # RabbitMQ on 127.0.0.1:5672
    .venv/bin/python -m embedded bench relay_throughput --bus-url redis://...
    .venv/bin/python -m embedded bench relay_throughput --no-lag --batch-size 500

Part 1, throughput: ``--events`` pending outbox rows (payments of three events each, loaded
with SQL in the shape ``payments.eventstore`` writes them) are published by 1 and then 2 relay
processes racing, to a durable queue bound to every event type (persistent messages, publisher
confirms on AMQP), each relay passing ``--batch-size`` rows at a time (default
``OUTBOX_BATCH_SIZE``, as the relay task does); the queue's message count is checked against
the rows.

Part 2, lag: a real Celery worker processes payments created through the service at
``--rate`` per second for ``--seconds``; the relay runs only as it does in production (kicked
after each commit). A consumer stamps every message on arrival; lag is arrival time minus the
event's ``created_at`` (written in the event's transaction, just before its commit).

It uses its own database (``aegispay_bench_relay``), emptied at the start.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import benchdb

REPO = Path(__file__).resolve().parent.parent
QUEUE = "aegispay-bench-relay"
os.environ["CELERY_QUEUE"] = QUEUE
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"

LOAD_SQL = """
WITH p AS (
    INSERT INTO payments_payment (
        id, status, amount, currency, capture_method, amount_authorized, amount_captured,
        amount_refunded, payment_method, customer, description, merchant_reference, metadata,
        gateway, gateway_reference, failure_code, failure_message, version, created_at,
        updated_at, merchant_id)
    SELECT 'pay_bench' || lpad(g::text, 9, '0'), 'authorized', 1000 + g %% 5000, 'EUR', 'manual',
           1000 + g %% 5000, 0, 0, '{"type": "card", "token": "tok_visa"}', '{}', '', '', '{}',
           'sandbox_a', 'ch_' || g, '', '', 3, now(), now(), %(merchant)s
    FROM generate_series(1, %(payments)s) g
    RETURNING id, amount, merchant_id
), e AS (
    INSERT INTO payments_paymentevent (
        id, payment_id, sequence, type, from_status, to_status, data, actor, correlation_id,
        created_at)
    SELECT 'evt_' || p.id || '_' || s.seq, p.id, s.seq, s.type, s.from_status, s.to_status,
           CASE WHEN s.seq = 1 THEN jsonb_build_object('changes', jsonb_build_object(
                    'amount', p.amount, 'currency', 'EUR', 'capture_method', 'manual',
                    'amount_authorized', 0, 'amount_captured', 0, 'amount_refunded', 0,
                    'payment_method', '{"type": "card", "token": "tok_visa"}'::jsonb,
                    'customer', '{}'::jsonb, 'description', '', 'merchant_reference', '',
                    'metadata', '{}'::jsonb, 'gateway', '', 'gateway_reference', '',
                    'failure_code', '', 'failure_message', '',
                    'authorization_expires_at', null))
                WHEN s.seq = 2 THEN '{"changes": {"gateway": "sandbox_a"}}'::jsonb
                ELSE jsonb_build_object('changes', jsonb_build_object(
                    'amount_authorized', p.amount))
           END,
           'bench', '', now()
    FROM p CROSS JOIN (VALUES (1, 'payment.initiated', '', 'initiated'),
                              (2, 'payment.processing', 'initiated', 'processing'),
                              (3, 'payment.authorized', 'processing', 'authorized'))
         AS s(seq, type, from_status, to_status)
    RETURNING id, payment_id, sequence, type, from_status, to_status, data, actor, created_at
)
INSERT INTO outbox_outboxmessage (
    event_id, event_type, aggregate_type, aggregate_id, sequence, merchant_id, payload, state,
    attempts, last_error, created_at)
SELECT e.id, e.type, 'payment', e.payment_id, e.sequence, %(merchant)s,
       jsonb_build_object('id', e.id, 'object', 'event', 'type', e.type,
                          'payment', e.payment_id, 'sequence', e.sequence,
                          'from_status', nullif(e.from_status, ''), 'to_status', e.to_status,
                          'data', e.data, 'actor', e.actor, 'created_at', e.created_at),
       'pending', 0, '', now()
FROM e ORDER BY e.payment_id, e.sequence
"""


def reset() -> None:
    benchdb.empty_tables()


def relay_worker(batch_size: int) -> None:
    from django.db import connection

    from outbox.bus import EventBus
    from outbox.relay import outbox_relay_pass

    connection.close()  # a connection of this process's own, not the parent's
    bus = EventBus()
    while True:
        result = outbox_relay_pass(batch_size=batch_size, bus=bus)
        if result.bus_down:
            raise SystemExit("the event bus went down during the run")
        if result.claimed == 0:
            from outbox.models import OutboxMessage

            if not OutboxMessage.objects.filter(state="pending").exists():
                break
            time.sleep(0.01)
    bus.close()
    connection.close()


def throughput(args: argparse.Namespace, merchant_id: str, relays: int) -> float:
    from django.db import connection

    from outbox.bus import bus_connection, consumer_queue
    from outbox.models import OutboxMessage

    reset_outbox_only()
    payments = args.events // 3
    with connection.cursor() as cursor:
        cursor.execute(LOAD_SQL, {"merchant": merchant_id, "payments": payments})
    total = OutboxMessage.objects.filter(state="pending").count()
    queue_name = f"aegispay.bench.{uuid.uuid4().hex[:8]}"
    with bus_connection() as conn:
        queue = consumer_queue(queue_name, ["#"])(conn.default_channel)
        queue.declare()
        connection.close()
        context = multiprocessing.get_context("fork")
        started = time.monotonic()
        processes = [
            context.Process(target=relay_worker, args=(args.batch_size,)) for _ in range(relays)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        elapsed = time.monotonic() - started
        published = OutboxMessage.objects.filter(state="published").count()
        _name, in_queue, _consumers = queue.queue_declare(passive=True)
        queue.delete()
    rate = total / elapsed
    print(
        f"{relays} relay(s): {total} events in {elapsed:.2f}s = {rate:,.0f} events/s "
        f"(published {published}, in the consumer queue {in_queue})"
    )
    if published != total or in_queue != total:
        raise SystemExit("RESULT: FAIL (published or queued count differs)")
    return rate


def reset_outbox_only() -> None:
    reset()
    from payments.models import Merchant

    Merchant.objects.get_or_create(id="mer_bench", defaults={"name": "Relay bench"})


def start_workers(log_dir: Path) -> list[subprocess.Popen]:
    """As ``make run`` does: a worker for payments and one for the relay's own queue."""
    celery = [sys.executable, "-m", "celery", "-A", "aegispay", "worker", "--loglevel", "WARNING"]
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    argvs = {
        "payments": [*celery, "--concurrency", "2", *quiet, "-Q", QUEUE, "-n", "bench@%h"],
        "relay": [*celery, "--concurrency", "1", *quiet, "-Q", f"{QUEUE}.outbox", "-n", "relay@%h"],
    }
    return [
        subprocess.Popen(
            argv,
            cwd=REPO,
            env=os.environ.copy(),
            stdout=(log_dir / f"relay-bench-{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, argv in argvs.items()
    ]


def lag(args: argparse.Namespace) -> None:
    import json

    from aegispay.celery import app as celery_app
    from outbox.bus import bus_connection, consumer_queue
    from outbox.models import OutboxMessage
    from payments.merchants import merchant_create
    from payments.models import Payment, PaymentEvent
    from payments.services import payment_create

    reset()
    celery_app.control.purge()
    lags: list[float] = []
    seen: set[str] = set()
    stop = threading.Event()
    queue_name = f"aegispay.bench.{uuid.uuid4().hex[:8]}"
    ready = threading.Event()

    def consume() -> None:
        with bus_connection() as conn:
            queue = consumer_queue(queue_name, ["#"])

            def on_message(body: object, message: object) -> None:
                arrived = time.time()
                event = json.loads(body) if isinstance(body, str | bytes) else body
                created = datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
                if event["id"] not in seen:
                    seen.add(event["id"])
                    lags.append(arrived - created.timestamp())
                message.ack()  # type: ignore[attr-defined]

            with conn.Consumer(queue, callbacks=[on_message], prefetch_count=500):
                ready.set()
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.5)
            queue(conn.default_channel).delete()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    ready.wait(30)
    log_dir = REPO / ".aegispay"
    log_dir.mkdir(exist_ok=True)
    workers = start_workers(log_dir)
    time.sleep(3)  # the worker's start-up, outside the measured window
    try:
        merchant, _ = merchant_create(name="Lag bench", gateways=["sandbox_a", "sandbox_b"])
        started = time.monotonic()
        created = 0
        while time.monotonic() - started < args.seconds:
            due = int((time.monotonic() - started) * args.rate)
            while created < due:
                payment_create(
                    merchant=merchant,
                    amount=1000 + created,
                    currency="EUR",
                    payment_method={"type": "card", "token": "tok_visa"},
                    actor="bench",
                )
                created += 1
            time.sleep(0.002)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # every payment settled, every event received
            unsettled = Payment.objects.exclude(status="completed").count()
            events = PaymentEvent.objects.count()
            pending = OutboxMessage.objects.filter(state="pending").count()
            if unsettled == pending == 0 and len(seen) >= events:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        consumer.join(timeout=10)
    events = PaymentEvent.objects.count()
    ordered = sorted(lags)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    print(
        f"lag under load: {created} payments at {args.rate}/s for {args.seconds:.0f}s, "
        f"{events} events, {len(seen)} received"
    )
    print(
        f"commit -> consumer lag ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  "
        f"max {ordered[-1] * 1000:.1f}  mean {statistics.fmean(ordered) * 1000:.1f}"
    )
    if len(seen) != events:
        raise SystemExit("RESULT: FAIL (events missing at the consumer)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus-url", default=None, help=f"default $EVENT_BUS_URL or {DEFAULT_AMQP}")
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch-size", type=int, default=None, help="default OUTBOX_BATCH_SIZE")
    parser.add_argument("--rate", type=float, default=40.0, help="payments per second (part 2)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-lag", action="store_true", help="part 1 only")
    args = parser.parse_args()
    configured = os.environ.get("EVENT_BUS_URL", "")
    url = args.bus_url or (configured if configured.startswith("amqp") else DEFAULT_AMQP)
    os.environ["EVENT_BUS_URL"] = url
    os.environ["EVENT_BUS_EXCHANGE"] = "aegispay.bench"
    benchdb.setup("aegispay_bench_relay")

    from django.conf import settings

    from outbox.bus import bus_connection

    args.batch_size = args.batch_size or settings.OUTBOX_BATCH_SIZE
    try:
        with bus_connection() as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        print(f"cannot reach the event bus at {url}: {exc}; pass --bus-url")
        return 2
    print(
        f"event bus: {url.split('@')[-1]}  (exchange aegispay.bench)  batch size {args.batch_size}"
    )
    reset_outbox_only()
    for relays in (1, 2):
        throughput(args, "mer_bench", relays)
    if not args.no_lag:
        lag(args)
    print("RESULT: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
