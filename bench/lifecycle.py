"""make bench-lifecycle: payments through the whole lifecycle, end to end, as ``make run`` runs.

    make bench-lifecycle                                       # 2,000 payments offered at 50/s
    make bench-lifecycle BENCH_ARGS="--payments 500 --rate 0 --connections 16"
    .venv/bin/python -m embedded bench lifecycle --payments 300 --rate 50 --json /tmp/lc.json

**What runs.** The processes of ``make run`` (embedded/cli.py's ``cmd_run``), with its commands
and flags: gunicorn serving AegisPay (``-c python:aegispay.gunicorn``), one ``celery worker
--concurrency 2`` on the default queue, the relay's worker (``--concurrency 1``) on the outbox
queue, and beat, with production settings (``DEBUG=false``), on a database of the bench's own
(``aegispay_bench_lifecycle``, emptied first) and Celery queues of its own
(``CELERY_QUEUE=bench_lifecycle``). The sandbox gateways answer at once
(``SANDBOX_LATENCY_MS=0``) and fault injection is off. The merchant's key may send far more
requests than the bench does. Every process is stopped (its whole process group) at the end,
whatever happens; their logs are in ``.aegispay/bench-lifecycle/``.

**What it sends.** ``--payments`` payments through ``POST /v1/payments`` (capture_method
automatic, token ``tok_visa``, an Idempotency-Key each), from ``--connections`` threads with a
keep-alive connection each: offered at ``--rate`` payments/s on a fixed schedule (open loop:
when every connection is busy at a payment's time, another one is opened, up to 256), or with
``--rate 0`` each thread sending its next payment when the last one is answered (closed loop).
A request whose connection fails is sent again with the same key.

**What it measures.** It waits (``--timeout`` seconds after the last payment is sent) until every
payment is ``completed``: the worker authorises it, then captures it in a task of its own, and
an automatic capture completes in the capture's own transaction (beat's settlement sweep is
only for manual captures). The worker's backlog shows in ``initiated -> processing`` (the
processing task waiting in the queue) and ``authorized -> captured`` (the capture task). Then
one SQL query reads the payments' statuses and their events' ``created_at`` and it prints:

- the offered rate, the rate the payments were sent at and the POST latency;
- payments/s completed, from the first payment's create to the last one's ``completed``;
- per stage, p50/p90/p99 in ms: ``initiated -> processing -> authorized -> captured ->
  completed``, and ``create -> authorized``, ``create -> completed``;
- the payments by final status, and those not completed;
- CPU time per completed payment, in ms, of each process of the run (gunicorn, the worker, the
  relay's worker, beat, each with its children) and of the PostgreSQL and Redis servers behind
  ``DATABASE_URL`` and ``REDIS_URL`` (the server process found by its listening port, with every
  backend it forked), and of this process (``sender``: the load), from the first payment sent
  to the last one completed; and the payments/s that much CPU (the sender's left out) allows on
  this machine's cores, were nothing else running.

``--json PATH`` writes the same results as JSON. The exit code is 1 when any payment did not
complete (a POST refused, or still not ``completed`` at the timeout), 2 when the processes
could not be started.

**On a database that holds data already** (``make bench-scale``, ``bench/scale.py``):
``--database NAME`` runs on that database instead; ``--keep-data`` does not empty it first
(queues, chaos and breakers are still cleared); ``--merchant ID`` sends as that existing
merchant (a new API key of its). Whatever the database holds, only this run's payments are
waited for and measured: the merchant's, created since the processes were started. They stay
there when it ends, completed, as any merchant's payments would.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import benchdb
from serve import wait_for

if TYPE_CHECKING:
    from django.db.models import QuerySet

REPO = Path(__file__).resolve().parent.parent
DATABASE = "aegispay_bench_lifecycle"
QUEUE = "bench_lifecycle"
LOG_DIR = REPO / ".aegispay" / "bench-lifecycle"
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
SEND_ATTEMPTS = 3
# Open loop: the most connections the senders open to keep to the schedule.
MAX_OPEN_LOOP_CONNECTIONS = 256
# The status events of an automatic capture, in order; the stages are the steps between them.
EVENT_TYPES = ("initiated", "processing", "authorized", "captured", "completed")
STAGES: tuple[tuple[str, str, str], ...] = (
    ("initiated -> processing", "initiated", "processing"),
    ("processing -> authorized", "processing", "authorized"),
    ("authorized -> captured", "authorized", "captured"),
    ("captured -> completed", "captured", "completed"),
    ("create -> authorized", "initiated", "authorized"),
    ("create -> completed", "initiated", "completed"),
)


# --- CPU time of the processes and servers of a run ---


def process_tree(pid: int) -> list[Any]:
    """A process (a ``psutil.Process``) and its live descendants (a Celery worker's pool,
    gunicorn's workers); empty when it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its whole tree: the live descendants', and
    those of every child that exited and was waited for (``children_user``, ``children_system``
    of its parent). 0 when it is gone."""
    import psutil

    total = 0.0
    for process in process_tree(pid):
        try:
            t = process.cpu_times()
        except psutil.Error:  # exited since listed: its parent's children_* has it, or will
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def listening_pid(url: str) -> int | None:
    """The process listening on the TCP port of a server URL on this machine, or ``None``."""
    from urllib.parse import urlsplit

    import psutil

    port = urlsplit(url).port
    if port is None:
        return None
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def cpu_snapshot(services: Sequence[Service]) -> dict[str, float]:
    """CPU seconds so far of each service (its process group leader's tree) and of the
    PostgreSQL and Redis servers the run uses."""
    out = {service.name: process_cpu_seconds(service.process.pid) for service in services}
    mine = os.times()
    out["sender"] = mine.user + mine.system  # this process: the load, not AegisPay
    for name, variable in (("postgres", "DATABASE_URL"), ("redis", "REDIS_URL")):
        pid = listening_pid(os.environ.get(variable, ""))
        if pid is not None:
            out[name] = process_cpu_seconds(pid)
    return out


def cpu_per_payment(
    before: dict[str, float], after: dict[str, float], completed: int
) -> dict[str, float]:
    """Milliseconds of CPU per completed payment, per process and in total."""
    if not completed:
        return {}
    per = {
        name: round((after[name] - before.get(name, 0.0)) * 1000 / completed, 2) for name in after
    }
    per["total"] = round(sum(per.values()), 2)
    return per


# --- the processes of make run ---


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]


def child_env(port: int) -> dict[str, str]:
    """The launcher's environment (DATABASE_URL, REDIS_URL, SECRET_KEY...) with the bench's
    database, queues, production settings and an instant sandbox."""
    return dict(
        os.environ,
        DATABASE_NAME=os.environ["DATABASE_NAME"],
        CELERY_QUEUE=QUEUE,
        DEBUG="false",
        SANDBOX_LATENCY_MS="0",
        PORT=str(port),
    )


def commands(port: int, outbox_queue: str) -> dict[str, list[str]]:
    """embedded/cli.py's ``cmd_run`` commands, flag for flag."""
    celery = [sys.executable, "-m", "celery", "-A", "aegispay"]
    return {
        "web": [
            *[sys.executable, "-m", "gunicorn", "-c", "python:aegispay.gunicorn"],
            *["--bind", f"{HOST}:{port}", "aegispay.wsgi"],
        ],
        "worker": [
            *celery,
            *["worker", "--loglevel", "INFO", "--concurrency", "2"],
            *["--without-gossip", "--without-mingle"],
        ],
        "relay": [
            *celery,
            *["worker", "--loglevel", "INFO", "--concurrency", "1", "-n", "relay@%h"],
            *["--without-gossip", "--without-mingle", "-Q", outbox_queue],
        ],
        "beat": [*celery, "beat", "--loglevel", "INFO"],
    }


def start(port: int, outbox_queue: str, services: list[Service]) -> None:
    """Start the processes, each in a process group of its own, adding each to ``services`` as
    soon as it runs (so that whatever happens next, it is stopped)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = child_env(port)
    for name, argv in commands(port, outbox_queue).items():
        with (LOG_DIR / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        services.append(Service(name, process))


def stop(services: Sequence[Service]) -> None:
    """SIGTERM to every process group, SIGKILL to those still there after the timeout. Stop
    signals wait until it is done (a second Ctrl-C cannot leave processes behind)."""
    stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        _stop(services)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)


def _stop(services: Sequence[Service]) -> None:
    for service in services:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for service in services:
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        # The group too: a worker's pool children may outlive their parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait()


def check_alive(services: Sequence[Service]) -> None:
    for service in services:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with code {service.process.returncode} "
                f"(see {LOG_DIR / service.name}.log)"
            )


def wait_until_up(services: Sequence[Service], base_url: str, since: float) -> None:
    """gunicorn answers /health/live, both workers answer a ping, and beat has scheduled a
    sweep that the relay's worker ran (its heartbeat is newer than ``since``)."""
    from aegispay.celery import app as celery_app
    from common.heartbeats import heartbeats

    web = next(s for s in services if s.name == "web")
    wait_for(f"{base_url}/health/live", web.process, timeout=START_TIMEOUT_SECONDS)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    workers_up = beat_up = False
    while not (workers_up and beat_up):
        check_alive(services)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"not up in {START_TIMEOUT_SECONDS:.0f}s: workers {workers_up}, beat {beat_up}"
            )
        if not workers_up:
            replies = celery_app.control.ping(timeout=1.0) or []
            nodes = {name for reply in replies for name in reply}
            workers_up = any(n.startswith("celery@") for n in nodes) and any(
                n.startswith("relay@") for n in nodes
            )
        if not beat_up:
            beat_up = heartbeats().get("outbox.tasks.outbox_relay", 0.0) > since
        time.sleep(0.5)


def clean_slate(*, keep_data: bool = False) -> None:
    """Empty tables (``keep_data``: not), no queued tasks, chaos off, no breaker or bulkhead
    state from earlier runs."""
    from django.conf import settings
    from django_redis import get_redis_connection
    from kombu import Queue

    from aegispay.celery import app as celery_app
    from gateways.chaos import clear_chaos

    if not keep_data:
        benchdb.empty_tables()
    with celery_app.connection_for_write() as conn:
        for name in (QUEUE, settings.CELERY_OUTBOX_QUEUE):
            Queue(name, channel=conn.default_channel).purge()
    clear_chaos()
    redis = get_redis_connection("default")
    for pattern in ("aegispay:breaker:*", "aegispay:bulkhead:*"):
        for key in redis.scan_iter(pattern):
            redis.delete(key)


# --- the sender ---


@dataclass
class Sent:
    """What the senders saw: payments created, POSTs refused (by status or error), each created
    payment's POST latency and how late it was sent, the first request and the last answer."""

    created: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    first: float = math.inf
    last_sent: float = 0.0
    last_answered: float = 0.0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender:
    """Sender threads with a keep-alive connection each, taking payment numbers from a queue.

    Closed loop (``rate`` 0): ``threads`` threads and every number queued at once. Open loop:
    a dispatcher queues number ``i`` at ``i / rate`` seconds; when no sender is idle it starts
    another (up to ``MAX_OPEN_LOOP_CONNECTIONS``), so a slow answer does not hold the next
    payments back. How late each was taken off the queue is recorded.
    """

    def __init__(self, *, port: int, api_key: str, payments: int, rate: float, threads: int):
        self.port = port
        self.payments = payments
        self.rate = rate
        self.initial_threads = threads
        self.run_id = f"run{int(time.time())}"
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
        }
        self.todo: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.idle = 0
        self.idle_lock = threading.Lock()
        self.sent = Sent()

    def add_thread(self) -> None:
        thread = threading.Thread(target=self.loop, args=(len(self.threads),), daemon=True)
        self.threads.append(thread)
        thread.start()

    def run(self) -> Sent:
        for _ in range(min(self.initial_threads, self.payments)):
            self.add_thread()
        started = time.monotonic()
        for index in range(self.payments):
            due = started + index / self.rate if self.rate > 0 else started
            if self.rate > 0:
                time.sleep(max(0.0, due - time.monotonic()))
                with self.idle_lock:
                    busy = self.idle == 0
                if busy and len(self.threads) < MAX_OPEN_LOOP_CONNECTIONS:
                    self.add_thread()
            self.todo.put((index, due))
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()
        self.sent.connections = len(self.threads)
        return self.sent

    def loop(self, thread: int) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        counter = 0
        try:
            while True:
                with self.idle_lock:
                    self.idle += 1
                job = self.todo.get()
                with self.idle_lock:
                    self.idle -= 1
                if job is None:
                    return
                index, due = job
                late = max(0.0, time.monotonic() - due) if self.rate > 0 else 0.0
                counter += 1
                # Letters between the digit groups: never mistaken for a card number.
                key = f"{self.run_id}-t{thread}-n{counter}"
                body = json.dumps(
                    {
                        "amount": 1000 + index % 9000,
                        "currency": "USD",
                        "capture_method": "automatic",
                        "payment_method": {"type": "card", "token": "tok_visa"},
                    }
                )
                conn, outcome, began, ended = self.post(conn, key, body)
                with self.sent.lock:
                    self.sent.first = min(self.sent.first, began)
                    self.sent.last_sent = max(self.sent.last_sent, began)
                    self.sent.last_answered = max(self.sent.last_answered, ended)
                    self.sent.lateness.append(late)
                    if outcome == "201":
                        self.sent.created += 1
                        self.sent.latencies.append(ended - began)
                    else:
                        self.sent.refused[outcome] += 1
        finally:
            conn.close()

    def post(
        self, conn: http.client.HTTPConnection, key: str, body: str
    ) -> tuple[http.client.HTTPConnection, str, float, float]:
        """POST one payment; on a broken connection, again on a new one with the same key (the
        API replays it). Returns the connection to go on with, the status (or the error),
        and when the request began and its answer ended."""
        began = time.monotonic()
        outcome = ""
        for _ in range(SEND_ATTEMPTS):
            try:
                conn.request(
                    "POST", "/v1/payments", body, headers={**self.headers, "Idempotency-Key": key}
                )
                response = conn.getresponse()
                response.read()
                return conn, str(response.status), began, time.monotonic()
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        return conn, outcome, began, time.monotonic()


# --- results ---


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 50), 1),
        "p90": round(percentile(ordered, 90), 1),
        "p99": round(percentile(ordered, 99), 1),
    }


@dataclass(frozen=True)
class Run:
    """Which payments are this run's: its merchant's, created at or after ``since``."""

    merchant_id: str
    since: datetime


def run_payments(run: Run) -> QuerySet[Any]:
    from payments.models import Payment

    return Payment.objects.filter(merchant_id=run.merchant_id, created_at__gte=run.since)


def wait_completed(services: Sequence[Service], run: Run, expected: int, timeout: float) -> None:
    """Until the ``expected`` payments (those the API created) are there and all ``completed``,
    or until ``timeout`` seconds have passed. Raises ``RuntimeError`` if a process died."""
    payments = run_payments(run)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(services)
        if payments.count() >= expected and not payments.exclude(status="completed").exists():
            return
        time.sleep(0.5)


def read_lifecycles(run: Run) -> list[tuple[str, str, dict[str, float]]]:
    """One query: each of the run's payments' id, status and the epoch seconds of its first
    event of each status type."""
    from django.db import connection

    from payments.models import Payment, PaymentEvent

    columns = ", ".join(
        f"extract(epoch FROM min(e.created_at) FILTER (WHERE e.type = 'payment.{name}'))"
        for name in EVENT_TYPES
    )
    query = (
        f"SELECT p.id, p.status, {columns} "  # noqa: S608 - table names and fixed types only
        f"FROM {Payment._meta.db_table} p "
        f"LEFT JOIN {PaymentEvent._meta.db_table} e ON e.payment_id = p.id "
        "WHERE p.merchant_id = %s AND p.created_at >= %s "
        "GROUP BY p.id, p.status"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [run.merchant_id, run.since])
        rows = cursor.fetchall()
    return [
        (
            pk,
            status,
            {n: float(t) for n, t in zip(EVENT_TYPES, times, strict=True) if t is not None},
        )
        for pk, status, *times in rows
    ]


def results(
    args: argparse.Namespace, run: Run, sent: Sent, cpu: tuple[dict[str, float], dict[str, float]]
) -> dict[str, Any]:
    lifecycles = read_lifecycles(run)
    statuses = Counter(status for _, status, _ in lifecycles)
    completed = statuses.get("completed", 0)
    stages = {
        name: summary(
            [(t[end] - t[begin]) * 1000 for _, _, t in lifecycles if begin in t and end in t]
        )
        for name, begin, end in STAGES
    }
    creates = [t["initiated"] for _, _, t in lifecycles if "initiated" in t]
    completions = [t["completed"] for _, _, t in lifecycles if "completed" in t]
    window = max(completions) - min(creates) if completions and creates else 0.0
    requests = sent.created + sent.refused.total()
    sending = sent.last_sent - sent.first if requests > 1 else 0.0
    return {
        "payments": args.payments,
        "offered_rate": args.rate or None,
        "connections": args.connections,
        "sent": {
            "created": sent.created,
            "refused": dict(sent.refused),
            # From the first request sent to the last one sent, and to the last answer.
            "seconds": round(sending, 3),
            "rate": round((requests - 1) / sending, 1) if sending else None,
            "answered_seconds": round(sent.last_answered - sent.first, 3) if requests else None,
            "connections": sent.connections,
            "max_behind_schedule_ms": round(max(sent.lateness, default=0.0) * 1000, 1)
            if args.rate
            else None,
            "post_latency_ms": summary([s * 1000 for s in sent.latencies]),
        },
        "statuses": dict(sorted(statuses.items())),
        "completed": completed,
        "first_create_to_last_completed_seconds": round(window, 3),
        "payments_per_second": round(completed / window, 1) if window else None,
        "stages_ms": stages,
        "not_completed": [
            {"id": pk, "status": status}
            for pk, status, _ in sorted(lifecycles)
            if status != "completed"
        ],
        "failures": args.payments - completed,
        "cpu_ms_per_payment": cpu_per_payment(*cpu, completed),
        "cores": os.cpu_count(),
    }


def report(r: dict[str, Any]) -> None:
    sent = r["sent"]
    mode = (
        f"offered {r['offered_rate']:g} payments/s (open loop)"
        if r["offered_rate"]
        else f"as fast as {r['connections']} connections send (closed loop)"
    )
    print(f"lifecycle: {r['payments']} payments, {mode}")
    post = sent["post_latency_ms"]
    refused = ", ".join(f"{k}: {v}" for k, v in sorted(sent["refused"].items())) or "none"
    behind = (
        f", at most {sent['max_behind_schedule_ms']:.0f} ms behind schedule"
        if r["offered_rate"]
        else ""
    )
    print(
        f"sent: {r['payments']} in {sent['seconds']:.1f}s ({sent['rate']}/s) on "
        f"{sent['connections']} connections{behind}; all answered after "
        f"{sent['answered_seconds']:.1f}s; created {sent['created']}, refused: {refused}"
    )
    if post["n"]:
        print(
            f"POST /v1/payments ms: p50 {post['p50']:.1f}  p90 {post['p90']:.1f}  "
            f"p99 {post['p99']:.1f}"
        )
    print(f"final status: {', '.join(f'{k} {v}' for k, v in r['statuses'].items()) or 'none'}")
    print(
        f"throughput: {r['completed']} completed in "
        f"{r['first_create_to_last_completed_seconds']:.1f}s from the first create to the last "
        f"completed = {r['payments_per_second'] or 'n/a'} payments/s"
    )
    print(f"{'stage (ms)':<26}{'n':>6}{'p50':>10}{'p90':>10}{'p99':>10}")
    for name, s in r["stages_ms"].items():
        if s["n"]:
            print(f"{name:<26}{s['n']:>6}{s['p50']:>10.1f}{s['p90']:>10.1f}{s['p99']:>10.1f}")
        else:
            print(f"{name:<26}{0:>6}")
    cpu = r["cpu_ms_per_payment"]
    if cpu:
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items() if name != "total")
        served = cpu["total"] - cpu.get("sender", 0.0)
        ceiling = (r["cores"] or 1) * 1000 / served if served > 0 else None
        print(
            f"CPU ms per payment: {parts}; total {cpu['total']:.1f}"
            + (f" (at most {ceiling:.0f} payments/s on {r['cores']} cores)" if ceiling else "")
        )
    if r["not_completed"]:
        shown = r["not_completed"][:20]
        more = len(r["not_completed"]) - len(shown)
        print("not completed: " + ", ".join(f"{p['id']} ({p['status']})" for p in shown))
        if more:
            print(f"... and {more} more")
    if r["failures"]:
        print(f"RESULT: FAIL ({r['failures']} of {r['payments']} payments did not complete)")
    else:
        print("RESULT: PASS")


# --- main ---


@contextlib.contextmanager
def stopped_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (the launcher forwards them) end the run like Ctrl-C: through the
    ``finally`` that stops the processes."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=2000, help="how many (default 2000)")
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="payments/s offered (default 50); 0: as fast as the senders can",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="sender threads (default 16; open loop: to start with, more when all are busy)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait after sending for all to complete (default 300)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the results as JSON"
    )
    parser.add_argument(
        "--database", default=DATABASE, help=f"the database to run on (default {DATABASE})"
    )
    parser.add_argument("--keep-data", action="store_true", help="do not empty the database first")
    parser.add_argument(
        "--merchant",
        metavar="ID",
        help="send as this existing merchant (needs --keep-data; default: a new merchant)",
    )
    args = parser.parse_args()
    if args.payments < 1 or args.rate < 0 or args.connections < 1:
        parser.error("--payments and --connections must be positive, --rate at least 0")
    if args.merchant and not args.keep_data:
        parser.error("--merchant needs --keep-data (emptying the tables would delete it)")

    # This process's settings as the children's: queues, and settings read here.
    os.environ.update(CELERY_QUEUE=QUEUE, DEBUG="false", SANDBOX_LATENCY_MS="0")
    benchdb.setup(args.database)
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from embedded.processes import pick_free_port

    clean_slate(keep_data=args.keep_data)
    merchant, api_key = benchdb.unlimited_merchant("Lifecycle bench", merchant_id=args.merchant)
    run = Run(merchant_id=merchant.pk, since=timezone.now())
    connection.close()

    port = pick_free_port()
    services: list[Service] = []
    try:
        with stopped_on_signals():
            try:
                since = time.time()
                start(port, settings.CELERY_OUTBOX_QUEUE, services)
                try:
                    wait_until_up(services, f"http://{HOST}:{port}", since)
                except RuntimeError as exc:
                    print(f"could not start: {exc}")
                    return 2
                sender = Sender(
                    port=port,
                    api_key=api_key,
                    payments=args.payments,
                    rate=args.rate,
                    threads=args.connections,
                )
                cpu_before = cpu_snapshot(services)
                sent = sender.run()
                try:
                    wait_completed(services, run, sent.created, args.timeout)
                except RuntimeError as exc:
                    print(f"stopped waiting: {exc}")
                cpu_after = cpu_snapshot(services)
            finally:
                stop(services)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); every process stopped")
        return 130
    r = results(args, run, sent, (cpu_before, cpu_after))
    report(r)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
