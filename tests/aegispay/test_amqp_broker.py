"""Celery on RabbitMQ: with CELERY_BROKER_URL=amqp://..., as docker-compose.yml offers, a worker
takes the project's tasks from RabbitMQ and runs them. Runs when an AMQP URL is given
(``EVENT_BUS_URL`` or ``AMQP_TEST_URL``; ``.ci/run`` gives one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from kombu import Connection

from tests.outbox.conftest import amqp_url
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)  # the task reads the test database
def test_a_worker_runs_the_projects_tasks_from_rabbitmq(tmp_path: Path) -> None:
    url = amqp_url()
    if url is None:
        pytest.skip("no AMQP URL given: set AMQP_TEST_URL (or EVENT_BUS_URL=amqp://...)")
    queue = f"amqp_broker_{os.getpid()}"
    env = dict(
        os.environ,
        CELERY_BROKER_URL=url,
        CELERY_QUEUE=queue,
        DATABASE_NAME=connection.settings_dict["NAME"],
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "aegispay", "worker", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "-Q", queue, "-c", "1"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: b" ready." in log.read_bytes(), timeout=60)
        assert b"amqp://" in log.read_bytes()  # the worker's transport is RabbitMQ
        sent = subprocess.run(
            [sys.executable, "-c",
             "import django; django.setup()\n"
             "from payments.tasks import payments_expire_authorizations as task\n"
             "print(task.delay().id)"],
            cwd=REPO, env=env | {"DJANGO_SETTINGS_MODULE": "aegispay.settings"},
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.split()[-1]  # fmt: skip
        wait_until(lambda: f"[{sent}] succeeded".encode() in log.read_bytes(), timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        with Connection(url) as broker:  # the durable queue Celery declared for this test
            broker.default_channel.queue_delete(queue)
