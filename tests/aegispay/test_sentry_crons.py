"""Sentry cron monitors for the periodic tasks, when SENTRY_DSN is set (aegispay/settings.py).

Sentry's ingestion lies outside the project: a local fake server, in this process, receives
what the SDK sends. A real beat checks in (``in_progress``) as it sends a task whose interval
is whole minutes, and a real worker checks in ``ok`` when it succeeds, for the schedule's
entry, with the configured environment and release. Sentry Crons takes no interval under a
minute: those tasks send no check-in (their heartbeats are at /metrics, test_beat.py).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings
from django.db import connection

from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


class FakeSentry(ThreadingHTTPServer):
    """Accepts envelopes at /api/<project>/envelope/ and keeps their items."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def check_ins(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item for item in self.items if item.get("type") == "check_in"]


class _Handler(BaseHTTPRequestHandler):
    server: FakeSentry

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        items = []
        # An envelope: a header line, then (item header, payload) pairs.
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if header.strip():
                items.append({**json.loads(payload), "type": json.loads(header).get("type")})
        with self.server.lock:
            self.server.items.extend(items)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sentry() -> Iterator[FakeSentry]:
    server = FakeSentry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.mark.django_db(transaction=True)  # the worker's tasks read the test database
def test_each_periodic_task_checks_in_to_its_sentry_cron_monitor(
    sentry: FakeSentry, tmp_path: Path
) -> None:
    queue = f"sentry_crons_{os.getpid()}"
    redis_url = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path="/15"))
    env = dict(os.environ)
    env.update(
        SENTRY_DSN=f"http://public@127.0.0.1:{sentry.server_address[1]}/1",
        SENTRY_ENVIRONMENT="ci",
        SENTRY_RELEASE="aegispay@test",
        REDIS_URL=redis_url,
        CELERY_QUEUE=queue,
        DATABASE_NAME=connection.settings_dict["NAME"],
        BEAT_EXPIRE_SECONDS="60",  # the shortest interval Sentry Crons takes
        BEAT_OUTBOX_SWEEP_SECONDS="1",
    )
    celery = [sys.executable, "-m", "celery", "-A", "aegispay"]
    processes = [
        start([*celery, "beat", "--loglevel", "INFO"], env, tmp_path / "beat.log"),
        start(
            [
                *celery,
                "worker",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                f"{queue},{queue}.outbox",
                "-c",
                "1",
            ],
            env,
            tmp_path / "worker.log",
        ),
    ]
    try:

        def expiry_ok() -> bool:
            return any(
                c["monitor_slug"] == "expire-authorizations" and c["status"] == "ok"
                for c in sentry.check_ins()
            )

        try:
            wait_until(expiry_ok, timeout=150)
        except AssertionError:
            logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
            raise AssertionError(f"no ok check-in; received {sentry.items[-5:]}; {logs}") from None
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        redis.Redis.from_url(redis_url).flushdb()

    expiry = [c for c in sentry.check_ins() if c["monitor_slug"] == "expire-authorizations"]
    statuses = [c["status"] for c in expiry]
    assert "in_progress" in statuses and "ok" in statuses
    assert {c.get("environment") for c in expiry} == {"ci"}
    assert {c.get("release") for c in expiry} == {"aegispay@test"}
    config = next(c["monitor_config"] for c in expiry if c.get("monitor_config"))
    assert config["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    # The sweep ran every second (its heartbeat is the metric) and never checked in.
    assert not [c for c in sentry.check_ins() if c["monitor_slug"] == "outbox-sweep"]
    assert b"Task outbox.tasks.outbox_relay" in (tmp_path / "worker.log").read_bytes()
