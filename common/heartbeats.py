"""The last success of each periodic task, kept in Redis so that every process sees it: the
workers record it (``aegispay/celery.py``, on ``task_success``), ``/metrics`` exports it
(``backoffice/metrics.py``), and an alert watches its age. Keys are the task names of the beat
schedule, so the set is bounded by the settings, never by input.
"""

from __future__ import annotations

from django_redis import get_redis_connection

HEARTBEATS_KEY = "aegispay:periodic:last_success"


def heartbeat_record(task_name: str, at: float) -> None:
    """``task_name`` succeeded at ``at`` (Unix time): keep the later of this and what is kept."""
    redis = get_redis_connection("default")
    redis.eval(
        "local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') "
        "if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
        1,
        HEARTBEATS_KEY,
        task_name,
        repr(at),
    )


def heartbeats() -> dict[str, float]:
    """Each periodic task's last success (Unix time), for the tasks that have succeeded."""
    raw = get_redis_connection("default").hgetall(HEARTBEATS_KEY)
    return {name.decode(): float(value) for name, value in raw.items()}
