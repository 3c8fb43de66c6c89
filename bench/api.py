"""make bench-api: ``POST /v1/payments`` and ``GET /v1/payments/{id}`` against a bare DRF app
doing the same writes, in one run, on one database.

    make bench-api
    .venv/bin/python -m embedded bench api --seconds 20 --rounds 2 --connections 32

Two servers run side by side on the database the launcher gives (``aegispay_bench_api``):

- AegisPay as production serves it: gunicorn with ``aegispay/gunicorn.py`` (its worker class,
  workers and threads), DEBUG off, every middleware, the rate limiter, idempotency keys, the
  outbox and its consumer marks, the processing task queued after commit (on a queue of the
  bench's own that no worker reads; dropped at the end);
- the reference (``bench/reference_app.py``): a bare DRF app under gunicorn's gthread worker
  with the same workers and threads, doing the API-key lookup, the validation and one
  transaction inserting the payment, its event and its outbox row.

The load is wrk (Debian's package; ``make bench-api`` installs it when run as root) or, where
wrk is missing, the Python load generator in ``bench/loadgen.py``: ``--connections``
keep-alive connections for ``--seconds``, each POST with an Idempotency-Key of its own, after
``--warmup`` seconds of unmeasured load on each server and endpoint. Each round measures both
servers, POST then GET, in alternating order; before each measurement the tables are vacuumed
and a checkpoint taken, outside the timed window. It prints req/s, p50 and p99 for each, the
ratios AegisPay/reference per round (throughput: higher is better; p99: lower is) and their
median over the rounds.

On a database that holds data already (``make bench-scale``, ``bench/scale.py``):
``--database NAME`` runs on that database instead of ``aegispay_bench_api``; ``--keep-data``
does not empty it first, and at the end deletes what this run wrote, so that it is left as it
was found; ``--merchant ID`` sends the requests as that existing merchant (a new API key of
its), whose payments fill the tables the merchant-scoped queries read.

    .venv/bin/python -m embedded bench api --database aegispay_bench_scale --keep-data \
        --merchant mer_...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import benchdb
import loadgen
from serve import POST_SCRIPT, Result, wait_for, wrk

REPO = Path(__file__).resolve().parent.parent
DATABASE = "aegispay_bench_api"
QUEUE = "bench_api"
BODY = (
    '{"amount": 2000, "currency": "USD", "payment_method": {"type": "card", "token": "tok_visa"}}'
)


@contextmanager
def _server(argv: list[str], env: dict[str, str], log: Path, health: str) -> Iterator[str]:
    from embedded.processes import pick_free_port

    port = pick_free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--bind", f"127.0.0.1:{port}"],
            cwd=REPO,
            env={**env, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_for(f"{base}{health}", process)
            except RuntimeError:
                sys.stderr.write(log.read_text(errors="replace")[-3000:])
                raise
            yield base
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=60)


def _drive(
    url: str, *, method: str, api_key: str, seconds: int, connections: int, script: Path
) -> Result:
    headers = {"Authorization": f"Bearer {api_key}", "X-Forwarded-Proto": "https"}
    if shutil.which("wrk"):
        if method == "POST":
            return wrk(url, seconds=seconds, connections=connections, script=script, headers=[])
        lines = [f"{name}: {value}" for name, value in headers.items()]
        return wrk(url, seconds=seconds, connections=connections, script=None, headers=lines)
    spec = loadgen.Spec(
        url=url,
        method=method,
        headers={**headers, "Content-Type": "application/json"} if method == "POST" else headers,
        body=BODY.encode() if method == "POST" else None,
        unique_key=method == "POST",
    )
    rate, p50, p99, bad = loadgen.run(spec, seconds=seconds, connections=connections)
    return Result(rate, p50, p99, bad)


def _settle() -> None:
    """Between two measurements, outside the timed window: the tables vacuumed and analysed and
    a checkpoint taken, so that neither server pays for the other's autovacuum or checkpoint."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in _TABLES:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        cursor.execute("CHECKPOINT")


_TABLES = (
    "payments_payment",
    "payments_paymentevent",
    "payments_idempotencykey",
    "outbox_outboxmessage",
    "outbox_outboxconsumermark",
)


def _forget_run(*, merchant_id: str, since: datetime) -> int:
    """``--keep-data``: delete what this run wrote, the payments of ``merchant_id`` created
    since ``since`` by either server with their events, outbox rows and consumer marks, and
    the merchant's idempotency keys of the run, in one transaction. Returns how many payments.

    Left there, those payments would stay ``initiated`` for good (their processing tasks are
    dropped, the reference queues none), and whatever runs next on the database would take
    them up: the reconciler queues every ``initiated`` payment, the relay and the in-process
    consumers read every pending outbox row (the reference's too, whose payloads are not
    AegisPay's). No worker ran during the bench, so nothing else (attempts, read models) was
    written for them. The event table refuses DELETE; this connection lifts that for it."""
    import pgtrigger
    from django.db import transaction

    from outbox.models import OutboxConsumerMark, OutboxMessage
    from payments.models import IdempotencyKey, Payment, PaymentEvent

    run = Payment.objects.filter(merchant_id=merchant_id, created_at__gte=since)
    ids = run.values("pk")
    with transaction.atomic(), pgtrigger.ignore("payments.PaymentEvent:append_only"):
        OutboxConsumerMark.objects.filter(aggregate_id__in=ids).delete()
        OutboxMessage.objects.filter(aggregate_id__in=ids).delete()
        PaymentEvent.objects.filter(payment__in=ids).delete()
        IdempotencyKey.objects.filter(merchant_id=merchant_id, created_at__gte=since).delete()
        _deleted, per_model = run.delete()
    return per_model.get(Payment._meta.label, 0)


def _line(name: str, post: Result, get: Result) -> str:
    return (
        f"{name:<10} POST {post.requests_per_second:7.1f} req/s p50 {post.p50_ms:6.1f} ms "
        f"p99 {post.p99_ms:7.1f} ms errors {post.errors} | GET {get.requests_per_second:7.1f} "
        f"req/s p50 {get.p50_ms:6.1f} ms p99 {get.p99_ms:7.1f} ms errors {get.errors}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this folder")
    parser.add_argument(
        "--database", default=DATABASE, help=f"the database to run on (default {DATABASE})"
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="do not empty the database first; delete what this run wrote at the end",
    )
    parser.add_argument(
        "--merchant",
        metavar="ID",
        help="send as this existing merchant (needs --keep-data; default: a new merchant)",
    )
    args = parser.parse_args()
    if args.merchant and not args.keep_data:
        parser.error("--merchant needs --keep-data (emptying the tables would delete it)")

    os.environ["CELERY_QUEUE"] = QUEUE
    benchdb.setup(args.database)
    from django.utils import timezone
    from django_redis import get_redis_connection

    from payments.models import Payment

    if not args.keep_data:
        benchdb.empty_tables()
    started = timezone.now()
    api_key, payment_id = benchdb.key_and_payment("API bench", merchant_id=args.merchant)
    try:
        rows = _measure(args, api_key, payment_id)
    finally:
        get_redis_connection("default").delete(QUEUE)
        if args.keep_data:
            merchant_id = args.merchant or Payment.objects.get(pk=payment_id).merchant_id
            forgotten = _forget_run(merchant_id=merchant_id, since=started)
            print(f"deleted this run's {forgotten} payments (--keep-data)", flush=True)
    return _report(args, rows)


def _measure(
    args: argparse.Namespace, api_key: str, payment_id: str
) -> dict[str, list[tuple[Result, Result]]]:
    """Both servers started, warmed up and measured for ``--rounds`` rounds; their results."""
    from aegispay import gunicorn as config

    workers, threads = config.workers, config.threads
    load = "wrk -t2" if shutil.which("wrk") else "bench/loadgen.py (2 processes)"
    print(
        f"gunicorn gthread, {workers} workers x {threads} threads each; load: {load}, "
        f"{args.connections} connections, {args.seconds} s per measurement",
        flush=True,
    )
    env = dict(
        os.environ,
        GUNICORN_ACCESS_LOG="-" if args.logs else "",
        ALLOWED_HOSTS="127.0.0.1",
        DEBUG="false",
    )
    aegispay_argv = [sys.executable, "-m", "gunicorn", "-c", "python:aegispay.gunicorn"]
    reference_argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "gthread",
        "-w",
        str(workers),
        "--threads",
        str(threads),
        "--chdir",
        str(REPO / "bench"),
    ]
    rows: dict[str, list[tuple[Result, Result]]] = {"aegispay": [], "reference": []}
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        tmp = args.logs or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        script = Path(tmp) / "post.lua"
        script.write_text(f'run_id = "{int(time.time())}"\napi_key = "{api_key}"\n' + POST_SCRIPT)
        bases = {
            "aegispay": stack.enter_context(
                _server(
                    [*aegispay_argv, "aegispay.wsgi"],
                    env,
                    Path(tmp) / "aegispay.log",
                    "/health/live",
                )
            ),
            "reference": stack.enter_context(
                _server(
                    [*reference_argv, "reference_app:application"],
                    env,
                    Path(tmp) / "reference.log",
                    "/health",
                )
            ),
        }
        # Warm-up, not measured: each server's first requests import what Django loads lazily
        # and open the connections its threads keep.
        for base in bases.values():
            for method, url in (
                ("POST", f"{base}/v1/payments"),
                ("GET", f"{base}/v1/payments/{payment_id}"),
            ):
                _drive(
                    url,
                    method=method,
                    api_key=api_key,
                    seconds=args.warmup,
                    connections=args.connections,
                    script=script,
                )
        for number in range(args.rounds):
            order = ["aegispay", "reference"] if number % 2 == 0 else ["reference", "aegispay"]
            for name in order:
                base = bases[name]
                common = {
                    "api_key": api_key,
                    "seconds": args.seconds,
                    "connections": args.connections,
                    "script": script,
                }
                _settle()
                post = _drive(f"{base}/v1/payments", method="POST", **common)
                _settle()
                get = _drive(f"{base}/v1/payments/{payment_id}", method="GET", **common)
                rows[name].append((post, get))
                print(f"round {number + 1} {_line(name, post, get)}", flush=True)
    return rows


def _report(args: argparse.Namespace, rows: dict[str, list[tuple[Result, Result]]]) -> int:
    """Print the ratios per round and their medians, write ``--json``; the exit code."""
    summary = {}
    for index in range(args.rounds):
        (a_post, a_get), (r_post, r_get) = rows["aegispay"][index], rows["reference"][index]
        summary[index + 1] = {
            "post_ratio": a_post.requests_per_second / r_post.requests_per_second,
            "get_ratio": a_get.requests_per_second / r_get.requests_per_second,
            "post_p99_ratio": a_post.p99_ms / r_post.p99_ms,
            "get_p99_ratio": a_get.p99_ms / r_get.p99_ms,
        }
        print(
            f"round {index + 1} AegisPay / reference: POST {summary[index + 1]['post_ratio']:.2f}x "
            f"(p99 {summary[index + 1]['post_p99_ratio']:.2f}x), "
            f"GET {summary[index + 1]['get_ratio']:.2f}x "
            f"(p99 {summary[index + 1]['get_p99_ratio']:.2f}x)",
            flush=True,
        )
    medians = {
        name: statistics.median(ratios[name] for ratios in summary.values())
        for name in ("post_ratio", "get_ratio", "post_p99_ratio", "get_p99_ratio")
    }
    print(
        f"median of {args.rounds} rounds, AegisPay / reference: "
        f"POST {medians['post_ratio']:.2f}x (p99 {medians['post_p99_ratio']:.2f}x), "
        f"GET {medians['get_ratio']:.2f}x (p99 {medians['get_p99_ratio']:.2f}x)",
        flush=True,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    name: [[post.__dict__, get.__dict__] for post, get in results]
                    for name, results in rows.items()
                }
                | {"ratios": summary, "median": medians},
                indent=2,
            )
        )
    errors = sum(post.errors + get.errors for results in rows.values() for post, get in results)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
