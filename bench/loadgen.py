"""A closed-loop HTTP load generator in Python, for runners without wrk (``make bench-api`` uses
wrk when it is installed, as it is when the bench runs as root).

``run(...)`` keeps ``connections`` keep-alive connections busy for ``seconds``, spread over
``processes`` processes (threads within each), and returns requests/s, p50, p99 and the count
of answers that were not 2xx, in the shape ``serve.wrk`` returns them.
"""

from __future__ import annotations

import http.client
import itertools
import multiprocessing
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Spec:
    url: str
    method: str
    headers: dict[str, str]
    body: bytes | None
    # POST only: a fresh Idempotency-Key per request
    unique_key: bool


def _worker(spec: Spec, seconds: float, threads: int, out: multiprocessing.Queue) -> None:
    parts = urlsplit(spec.url)
    latencies: list[float] = []
    bad = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    prefix = uuid.uuid4().hex[:12]
    counter = itertools.count()

    def loop() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        errors = 0
        while time.monotonic() < deadline:
            headers = dict(spec.headers)
            if spec.unique_key:
                headers["Idempotency-Key"] = f"{prefix}-{next(counter)}"
            start = time.perf_counter()
            try:
                conn.request(spec.method, parts.path, body=spec.body, headers=headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                continue
            mine.append(time.perf_counter() - start)
            if not 200 <= response.status < 400:
                errors += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            bad[0] += errors

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    out.put((latencies, bad[0]))


def run(
    spec: Spec, *, seconds: float, connections: int, processes: int = 2
) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx/3xx answers) of ``spec`` under a closed loop."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    per = max(1, connections // processes)
    started = time.monotonic()
    procs = [
        multiprocessing.Process(target=_worker, args=(spec, seconds, per, queue))
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - started
    latencies = sorted(value for lats, _ in results for value in lats)
    bad = sum(errors for _, errors in results)
    if not latencies:
        return 0.0, 0.0, 0.0, bad

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return len(latencies) / elapsed, pct(0.50), pct(0.99), bad
