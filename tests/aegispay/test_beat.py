"""Beat that survives (celery-redbeat): two beat processes run, exactly one schedules, and
killing the leader hands the schedule over within a minute. Each periodic task's last success
is recorded and exported at /metrics, for an alert to watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings

from common.heartbeats import HEARTBEATS_KEY, heartbeats
from outbox.tasks import outbox_relay
from payments.tasks import payment_process, payments_expire_authorizations
from tests.conftest import scrape
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_heartbeats() -> Iterator[None]:
    from aegispay import celery

    redis_client = redis.Redis.from_url(settings.REDIS_URL)
    redis_client.delete(HEARTBEATS_KEY)
    celery._recorded.clear()
    yield
    redis_client.delete(HEARTBEATS_KEY)
    celery._recorded.clear()


@pytest.mark.django_db
@pytest.mark.usefixtures("no_heartbeats")
def test_a_periodic_task_records_its_success_and_metrics_export_it() -> None:
    before = time.time()
    payments_expire_authorizations.apply().get()
    outbox_relay.apply().get()
    recorded = heartbeats()
    assert set(recorded) == {payments_expire_authorizations.name, outbox_relay.name}
    assert all(before <= at <= time.time() for at in recorded.values())

    body = scrape()
    expire = payments_expire_authorizations.name
    assert f'aegispay_periodic_task_interval_seconds{{task="{expire}"}} 60.0' in body
    assert f'aegispay_periodic_task_last_success_timestamp_seconds{{task="{expire}"}}' in body
    # Only the schedule's tasks are labels: the task that never ran has an interval only.
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert body.count("aegispay_periodic_task_interval_seconds{") == len(scheduled)
    assert body.count("aegispay_periodic_task_last_success_timestamp_seconds{") == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("no_heartbeats")
def test_a_task_kicked_again_within_a_second_records_its_heartbeat_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The relay runs many times a second under load: its heartbeat is written once a second
    per process, not once a run."""
    outbox_relay.apply().get()
    first = heartbeats()[outbox_relay.name]
    outbox_relay.apply().get()
    assert heartbeats()[outbox_relay.name] == first
    monkeypatch.setattr("aegispay.celery.HEARTBEAT_RESOLUTION_SECONDS", 0.0)
    outbox_relay.apply().get()
    assert heartbeats()[outbox_relay.name] > first


@pytest.mark.django_db
@pytest.mark.usefixtures("no_heartbeats")
def test_a_task_that_is_not_periodic_records_nothing() -> None:
    payment_process.apply(args=("pay_00000000000000000000000000",))
    assert heartbeats() == {}


# --- two beats ---


def beat_env(redis_db: int, queue: str) -> dict[str, str]:
    """A beat of its own: a Redis database and a queue nobody consumes, a fast schedule, and
    the production lock settings."""
    parts = urlsplit(settings.REDIS_URL)
    env = dict(os.environ)
    env.update(
        REDIS_URL=urlunsplit(parts._replace(path=f"/{redis_db}")),
        CELERY_QUEUE=queue,
        BEAT_OUTBOX_SWEEP_SECONDS="1",
    )
    for name in ("BEAT_LOCK_TIMEOUT_SECONDS", "BEAT_MAX_LOOP_INTERVAL_SECONDS", "BEAT_REDIS_URL"):
        env.pop(name, None)
    return env


def start_beat(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "aegispay", "beat", "--loglevel", "DEBUG"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def sent(log: Path) -> int:
    return log.read_bytes().count(b"Scheduler: Sending due task outbox-sweep")


@pytest.mark.e2e
def test_two_beats_one_schedules_and_the_standby_takes_over_within_a_minute(
    tmp_path: Path,
) -> None:
    env = beat_env(15, f"beat_failover_{os.getpid()}")
    client = redis.Redis.from_url(env["REDIS_URL"])
    client.flushdb()
    logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log"]
    beats = [start_beat(env, logs[0])]
    try:
        wait_until(lambda: sent(logs[0]) >= 2, timeout=60)
        beats.append(start_beat(env, logs[1]))
        wait_until(lambda: b"beat: Acquiring lock" in logs[1].read_bytes(), timeout=60)
        during = sent(logs[0])
        time.sleep(8)  # both running: the first keeps scheduling, the second only waits
        assert sent(logs[0]) >= during + 4
        assert sent(logs[1]) == 0
        assert b"beat: Acquired lock" not in logs[1].read_bytes()

        os.killpg(beats[0].pid, signal.SIGKILL)  # no clean release: its lock has to lapse
        killed = time.monotonic()
        beats[0].wait()
        wait_until(lambda: sent(logs[1]) >= 1, timeout=75)
        handover = time.monotonic() - killed
        assert handover < 60, handover
        assert b"beat: Acquired lock" in logs[1].read_bytes()
        # What they sent is really on the broker (the sweeps go to the relay's queue).
        assert client.llen(f"{env['CELERY_QUEUE']}.outbox") >= sent(logs[0]) + sent(logs[1])
        print(f"handover after the leader was killed: {handover:.1f} s")
    finally:
        for beat in beats:
            if beat.poll() is None:
                os.killpg(beat.pid, signal.SIGTERM)
                beat.wait(timeout=30)
        client.flushdb()
