"""Real Celery worker processes for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from aegispay.celery import app as celery_app
from tests.waiting import wait_until

WorkerFactory = Callable[..., subprocess.Popen]

# Fast retries so that tests of retry paths take a second, not a minute.
FAST = {"GATEWAY_RETRY_BASE_SECONDS": "0.1", "GATEWAY_RETRY_MAX_SECONDS": "0.5"}


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start ``celery worker`` processes on the test database and queue; all stop at teardown.

    Keyword arguments become environment variables of the worker (settings overrides).
    """
    celery_app.control.purge()
    started: list[subprocess.Popen] = []

    def start(**overrides: str) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(started)}.log"
        env = {
            **os.environ,
            "DATABASE_NAME": connection.settings_dict["NAME"],
            "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            **FAST,
            **overrides,
        }
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "aegispay", "worker",
                    "--loglevel", "INFO", "--concurrency", "2", "--without-gossip",
                    "--without-mingle", "--without-heartbeat",
                    "-Q", settings.CELERY_TASK_DEFAULT_QUEUE,
                ],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        started.append(process)
        wait_until(lambda: "ready." in log.read_text(), timeout=60)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        process.wait(timeout=30)


@pytest.fixture
def worker(start_worker: WorkerFactory) -> subprocess.Popen:
    """One worker with the default settings."""
    return start_worker()
