"""make bench-memory: the resident memory of every process of ``make run`` over many payments.

    make bench-memory                                          # 100,000 payments
    make bench-memory BENCH_ARGS="--payments 10000 --batch 1000"
    .venv/bin/python -m embedded bench memory --payments 20000 --json /tmp/memory.json

**What runs.** What ``make bench-lifecycle`` starts (``bench/lifecycle.py``, whose processes,
sender and clean slate this reuses): gunicorn, one ``celery worker --concurrency 2``, the
relay's worker and beat, production settings, the sandbox at zero latency, a database and
queues of the bench's own (``aegispay_bench_memory``, emptied first).

**What it does.** ``--payments`` payments through ``POST /v1/payments`` (automatic capture) in
batches of ``--batch``, each sent closed loop from ``--connections`` threads; after each batch it
waits until every payment so far is ``completed``, then reads the resident set size (``VmRSS``,
through psutil) of every process in each service's process tree: the Celery worker's
parent and its pool children, the relay's, gunicorn's master and workers, beat
(``lifecycle.process_tree``).

**What it prints.** A row per sample: payments completed, then the RSS in MiB of each role (the
worker's pool children summed, as the others). Then, per role, the growth from the sample at the
end of the warm-up (``--warmup`` payments, default a tenth) to the last one, in MiB, in per cent
and in MiB per 10,000 payments (least-squares slope over the samples after warm-up). A role is
**flat** when it grew by at most ``--tolerance`` per cent (default 5) from the warm-up to the end;
``RESULT: FLAT`` when every role is, ``RESULT: GROWS`` otherwise (exit code 1). A process that
changed (a pool child replaced, a gunicorn worker recycled) is said, since its memory starts
again from nothing.

At the lifecycle's throughput on a 2-core machine (``make bench-lifecycle``) 100,000 payments
take hours: ``--payments`` sets fewer, and the README says how many a quoted run had.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchdb
import lifecycle

DATABASE = "aegispay_bench_memory"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """After ``payments`` payments completed, ``seconds`` into the run: each role's RSS in bytes
    and the pids it was read from."""

    payments: int
    seconds: float
    rss: dict[str, int]
    pids: dict[str, tuple[int, ...]]


def rss_bytes(process: Any) -> int:
    """Resident set size of one ``psutil.Process``, 0 if it is gone."""
    import psutil

    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def roles(services: Sequence[lifecycle.Service]) -> dict[str, list[Any]]:
    """Role -> processes: each service's parent on its own, its descendants (a Celery pool,
    gunicorn's workers) together."""
    out: dict[str, list[Any]] = {}
    for service in services:
        tree = lifecycle.process_tree(service.process.pid)
        out[service.name] = tree[:1]
        if tree[1:]:
            out[f"{service.name} children"] = tree[1:]
    return out


def sample(services: Sequence[lifecycle.Service], payments: int, started: float) -> Sample:
    by_role = roles(services)
    return Sample(
        payments=payments,
        seconds=time.monotonic() - started,
        rss={role: sum(rss_bytes(p) for p in processes) for role, processes in by_role.items()},
        pids={role: tuple(p.pid for p in processes) for role, processes in by_role.items()},
    )


def slope_per_10k(points: Sequence[tuple[int, int]]) -> float | None:
    """Least-squares slope of RSS (bytes) over payments, in MiB per 10,000 payments."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if not var:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 10_000 / MIB


def verdict(samples: Sequence[Sample], warmup: int, tolerance: float) -> dict[str, Any]:
    """Per role: RSS at the end of warm-up and at the end, growth, slope, flat or not, and
    whether its processes changed in between."""
    base = next((s for s in samples if s.payments >= warmup), samples[-1])
    last = samples[-1]
    after = [s for s in samples if s.payments >= base.payments]
    out: dict[str, Any] = {}
    for role, end in last.rss.items():
        start = base.rss.get(role, 0)
        grown = end - start
        percent = grown / start * 100 if start else None
        slope = slope_per_10k([(s.payments, s.rss[role]) for s in after if role in s.rss])
        out[role] = {
            "warmup_mib": round(start / MIB, 1),
            "end_mib": round(end / MIB, 1),
            "growth_mib": round(grown / MIB, 1),
            "growth_percent": None if percent is None else round(percent, 1),
            "slope_mib_per_10k": None if slope is None else round(slope, 2),
            "flat": percent is not None and percent <= tolerance,
            "processes_changed": len({s.pids.get(role) for s in after}) > 1,
        }
    return out


def report(r: dict[str, Any]) -> None:
    samples = r["samples"]
    names = list(samples[-1]["rss_mib"])
    print(
        f"memory: {r['payments']} payments in batches of {r['batch']}, "
        f"{r['completed']} completed in {r['seconds']:.0f}s ({r['payments_per_second']}/s)"
    )
    print(f"{'payments':>9}{'seconds':>9}" + "".join(f"{n:>18}" for n in names) + "   (RSS MiB)")
    for s in samples:
        cells = "".join(f"{s['rss_mib'].get(n, 0.0):>18.1f}" for n in names)
        print(f"{s['payments']:>9}{s['seconds']:>9.0f}{cells}")
    print(
        f"from {r['warmup_payments']} payments (end of warm-up) to the last sample, "
        f"flat means at most {r['tolerance_percent']:g} % growth:"
    )
    for role, v in r["roles"].items():
        percent = "n/a" if v["growth_percent"] is None else f"{v['growth_percent']:+.1f} %"
        slope = "n/a" if v["slope_mib_per_10k"] is None else f"{v['slope_mib_per_10k']:+.2f}"
        changed = "; its processes changed" if v["processes_changed"] else ""
        print(
            f"  {role:<18} {v['warmup_mib']:>8.1f} -> {v['end_mib']:>8.1f} MiB "
            f"({v['growth_mib']:+.1f} MiB, {percent}; {slope} MiB per 10k payments): "
            f"{'flat' if v['flat'] else 'GROWS'}{changed}"
        )
    if r["failures"]:
        print(f"RESULT: FAIL ({r['failures']} payments did not complete)")
    else:
        print("RESULT: FLAT" if r["flat"] else "RESULT: GROWS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=100_000, help="how many (default 100000)")
    parser.add_argument(
        "--batch", type=int, default=2000, help="payments between samples (default 2000)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="payments before the baseline sample (default a tenth of --payments)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=5.0,
        help="per cent of growth after warm-up still called flat (default 5)",
    )
    parser.add_argument("--connections", type=int, default=16, help="sender threads (default 16)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait after each batch for all to complete (default 600)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the results as JSON"
    )
    args = parser.parse_args()
    if args.payments < 1 or args.batch < 1 or args.connections < 1:
        parser.error("--payments, --batch and --connections must be positive")
    warmup = args.payments // 10 if args.warmup is None else args.warmup

    os.environ.update(CELERY_QUEUE=lifecycle.QUEUE, DEBUG="false", SANDBOX_LATENCY_MS="0")
    benchdb.setup(DATABASE)
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from embedded.processes import pick_free_port

    lifecycle.clean_slate()
    merchant, api_key = benchdb.unlimited_merchant("Memory bench")
    run = lifecycle.Run(merchant_id=merchant.pk, since=timezone.now())
    connection.close()

    port = pick_free_port()
    services: list[lifecycle.Service] = []
    samples: list[Sample] = []
    created = refused = 0
    try:
        with lifecycle.stopped_on_signals():
            try:
                since = time.time()
                lifecycle.start(port, settings.CELERY_OUTBOX_QUEUE, services)
                try:
                    lifecycle.wait_until_up(services, f"http://{lifecycle.HOST}:{port}", since)
                except RuntimeError as exc:
                    print(f"could not start: {exc}")
                    return 2
                started = time.monotonic()
                samples.append(sample(services, 0, started))
                for number, first in enumerate(range(0, args.payments, args.batch)):
                    sender = lifecycle.Sender(
                        port=port,
                        api_key=api_key,
                        payments=min(args.batch, args.payments - first),
                        rate=0,
                        threads=args.connections,
                    )
                    sender.run_id = f"mem{int(since)}b{number}"
                    sent = sender.run()
                    created += sent.created
                    refused += sent.refused.total()
                    lifecycle.wait_completed(services, run, created, args.timeout)
                    connection.close()
                    done = lifecycle.run_payments(run).filter(status="completed").count()
                    samples.append(sample(services, done, started))
                    print(
                        f"{done} completed, worker children "
                        f"{samples[-1].rss.get('worker children', 0) / MIB:.1f} MiB",
                        flush=True,
                    )
                    if done < created:
                        print(f"stopped: {created - done} payments did not complete")
                        break
            except RuntimeError as exc:
                print(f"stopped: {exc}")
            finally:
                lifecycle.stop(services)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); every process stopped")
        return 130
    if len(samples) < 2:
        print("no sample after a batch")
        return 1
    seconds = samples[-1].seconds
    roles_verdict = verdict(samples, warmup, args.tolerance)
    r: dict[str, Any] = {
        "payments": args.payments,
        "batch": args.batch,
        "created": created,
        "refused": refused,
        "completed": samples[-1].payments,
        "seconds": round(seconds, 1),
        "payments_per_second": round(samples[-1].payments / seconds, 1) if seconds else None,
        "warmup_payments": next(
            (s.payments for s in samples if s.payments >= warmup), samples[-1].payments
        ),
        "tolerance_percent": args.tolerance,
        "samples": [
            {
                "payments": s.payments,
                "seconds": round(s.seconds, 1),
                "rss_mib": {k: round(v / MIB, 1) for k, v in s.rss.items()},
                "pids": {k: list(v) for k, v in s.pids.items()},
            }
            for s in samples
        ],
        "roles": roles_verdict,
        "flat": all(v["flat"] for v in roles_verdict.values()),
        "failures": args.payments - samples[-1].payments,
    }
    report(r)
    if args.json is not None:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    if r["failures"]:
        return 1
    return 0 if r["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
