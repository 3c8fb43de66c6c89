"""make schemathesis: schemathesis against the served OpenAPI schema, as CI runs it.

    make schemathesis                                   # what CI runs
    make schemathesis BENCH_ARGS="--seed 7 --max-examples 300"
    .venv/bin/python -m embedded bench contract --report /tmp/schemathesis.ndjson

**What runs.** gunicorn serves AegisPay as the image runs it (``-c python:aegispay.gunicorn
aegispay.wsgi``, production settings, DEBUG off) on a database of its own
(``aegispay_contract``, emptied first; ``BENCH_DATABASE_NAME`` overrides) and the Redis of
``REDIS_URL`` (the embedded ones unless the URLs are given). The run's merchant has nothing yet;
its API keys are made by the hooks (``contract_hooks.py``), with a request budget no run can
spend. Webhook URLs are checked for their syntax only (``WEBHOOK_ALLOW_PRIVATE_URLS``: nothing is
delivered, no host is resolved) and the per-address budget for requests without a key is lifted:
the fuzzer sends thousands of them.

**What schemathesis does.** ``schemathesis run`` loads ``/api/schema/`` from the server and runs
every phase: the schema's examples (it has none), its coverage cases (boundaries, each rule
broken on purpose), fuzzing, and stateful sequences through the OpenAPI links it infers from the
schema (``POST /v1/payments`` then ``GET``, capture, refund the payment it made...). Every check
runs (``--checks all``), with a fixed ``--seed``, no example database and no cache of earlier
runs' failures (``schemathesis.toml``), and one worker, so the same seed sends the same requests
in the same order: two workers interleave differently from run to run, and on CPython 3.11.7
(this machine's) threads parsing at once trip its "AST constructor recursion depth mismatch"
(CPython gh-106905) inside hypothesis. ``--max-examples`` bounds the cases per operation and
phase. The exit code is schemathesis' own (non-zero on any failure: a 5xx, an answer the schema
does not describe, valid data refused, invalid data accepted...), and non-zero too when fewer
than ``--min-cases`` cases ran. It prints how many cases ran and how long the step took, and the
end of gunicorn's log when something failed.

No Celery worker runs: payments stay ``initiated``. The tasks the API queues after commit go to
queues of the run's own (``CELERY_QUEUE=contract``), emptied at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchdb
from serve import wait_for

REPO = Path(__file__).resolve().parent.parent
DATABASE = "aegispay_contract"
QUEUE = "contract"
HOOKS = Path(__file__).resolve().parent / "contract_hooks.py"
CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
# The request budget of the fuzzer's keys (contract_hooks.py) and of requests without one.
BUDGET = 1_000_000
# CI's defaults: about three minutes on a 2-core machine, well above 1,000 cases (README,
# "Tests").
SEED = 20260801
MAX_EXAMPLES = 100
MIN_CASES = 1000


def gunicorn(port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        PORT=str(port),
        WEB_CONCURRENCY=str(workers),
        GUNICORN_ACCESS_LOG="",
        ALLOWED_HOSTS="127.0.0.1",
        DEBUG="false",
        WEBHOOK_ALLOW_PRIVATE_URLS="true",
        API_CLIENT_RATE_LIMIT_PER_SECOND=str(BUDGET),
        API_CLIENT_RATE_LIMIT_BURST=str(BUDGET),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:aegispay.gunicorn", "aegispay.wsgi"],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def schemathesis_argv(base: str, args: argparse.Namespace, report: Path) -> list[str]:
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/api/schema/",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        str(args.workers),
        "--generation-database",
        "none",
        # Production settings redirect plain http to https; the ingress says it was https.
        "--header",
        "X-Forwarded-Proto: https",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-color",
    ]


def count_cases(report: Path) -> int:
    """The test cases schemathesis generated and sent, every phase and stateful step counted
    (its summary's "N generated"), from its NDJSON report."""
    cases = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            cases += len(event["ScenarioFinished"]["recorder"].get("cases", {}))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-examples", type=int, default=MAX_EXAMPLES)
    parser.add_argument("--workers", type=int, default=1, help="schemathesis' workers")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn's workers")
    parser.add_argument("--min-cases", type=int, default=MIN_CASES)
    parser.add_argument("--report", type=Path, help="keep schemathesis' NDJSON report here")
    args = parser.parse_args()

    started = time.monotonic()
    os.environ["CELERY_QUEUE"] = QUEUE
    benchdb.setup(DATABASE)
    benchdb.empty_tables()
    from django.db import connection
    from django_redis import get_redis_connection

    from payments.models import Merchant

    merchant = Merchant.objects.create(name="Schemathesis", gateways=["sandbox_a", "sandbox_b"])
    connection.close()
    from embedded.processes import pick_free_port

    port = pick_free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gunicorn.log"
        report = args.report or Path(tmp) / "report.ndjson"
        server = gunicorn(port, args.web_workers, log)
        try:
            wait_for(f"{base}/health/live", server)
            argv = schemathesis_argv(base, args, report)
            print("$", " ".join(argv), flush=True)
            env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), CONTRACT_MERCHANT_ID=merchant.pk)
            # Run in the temporary directory: nothing of schemathesis' is left in the checkout.
            code = subprocess.run(argv, cwd=tmp, env=env, check=False).returncode
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        if code != 0:
            print("the end of gunicorn's log:\n" + "\n".join(log.read_text().splitlines()[-40:]))
        cases = count_cases(report) if report.exists() else 0
    redis = get_redis_connection("default")
    redis.delete(QUEUE, f"{QUEUE}.outbox")
    seconds = time.monotonic() - started
    print(
        f"schemathesis: {cases} cases, seed {args.seed}, --max-examples {args.max_examples}, "
        f"{args.workers} workers, {seconds:.0f} s (exit code {code})",
        flush=True,
    )
    if code == 0 and cases < args.min_cases:
        print(f"fewer than {args.min_cases} cases ran: raise --max-examples")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
