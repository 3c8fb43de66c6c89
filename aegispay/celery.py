"""The Celery application. Configuration lives in settings (the ``CELERY_`` names).

Correlation ids, for every task of every app: a message carries the id of the code that sent
it in the ``aegispay_correlation_id`` header; a task runs under the id given as its
``correlation_id`` argument, else the header's, else a fresh one (beat sends without one), and
when it ends its worker is left as it was before (no id in a worker; the caller's id for a task
run eagerly inside a request). Tasks therefore need not bind or clear ids themselves.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from celery import Celery, Task
from celery.signals import before_task_publish, task_postrun, task_prerun, task_success

from common.correlation import (
    bind_correlation_id,
    clear_correlation_id,
    get_correlation_id,
    new_correlation_id,
)
from common.heartbeats import heartbeat_record

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")

app = Celery("aegispay")
app.config_from_object("django.conf:settings", namespace="CELERY")
# celery-redbeat reads its settings (CELERY_REDBEAT_* in settings) through the namespace, but
# tells them apart from broker fallbacks by their bare names: give it those, or it warns.
app.conf.update(
    redbeat_redis_url=app.conf.first("redbeat_redis_url"),
    redbeat_redis_options=app.conf.first("redbeat_redis_options"),
)
app.autodiscover_tasks()
# Celery's Django fixup closes every database connection before and after every task unless
# ``CELERY_DB_REUSE_MAX`` is set (it reads that old-style name from the configuration, which
# the settings above have finalised by now): each task then opened a PostgreSQL session of its
# own (issue 13: 2.4 sessions a payment, each a forked backend with a cold catalog cache). Set
# so high that it never closes them by count; ``_keep_or_close_connections`` below decides.
app.conf.update(CELERY_DB_REUSE_MAX=2**62)

# Not "correlation_id": Celery's messages already have a property of that name (the task id).
CORRELATION_HEADER = "aegispay_correlation_id"

# The ids bound before each running task, innermost last (eager tasks can nest).
_outer_ids: ContextVar[tuple[str, ...]] = ContextVar("aegispay_outer_correlation_ids", default=())


@before_task_publish.connect
def _stamp_correlation_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    current = get_correlation_id()
    if current and headers is not None:
        headers.setdefault(CORRELATION_HEADER, current)


def _argument_id(task: Task, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The task's own ``correlation_id`` argument (keyword or positional), when it has one."""
    try:
        bound = inspect.signature(task.run).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return ""
    value = bound.arguments.get("correlation_id")
    return value if isinstance(value, str) else ""


def _header_id(task: Task) -> str:
    request = task.request
    # A worker turns custom headers into request attributes; an eager apply() keeps them in
    # request.headers.
    value = getattr(request, CORRELATION_HEADER, None) or (request.headers or {}).get(
        CORRELATION_HEADER
    )
    return value if isinstance(value, str) else ""


@task_prerun.connect
def _bind_task_correlation_id(
    task: Task, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **_: Any
) -> None:
    _outer_ids.set((*_outer_ids.get(), get_correlation_id()))
    chosen = _argument_id(task, args or (), kwargs or {}) or _header_id(task)
    bind_correlation_id(chosen or new_correlation_id())


@task_postrun.connect
def _restore_correlation_id(**_: Any) -> None:
    outer = _outer_ids.get()
    previous = outer[-1] if outer else ""
    _outer_ids.set(outer[:-1])
    if previous:
        bind_correlation_id(previous)
    else:
        clear_correlation_id()


@task_prerun.connect
@task_postrun.connect
def _keep_or_close_connections(
    task: Task | None = None, state: str | None = None, **_: Any
) -> None:
    """Around each task a worker runs, what Django does around each request: close a database
    connection older than ``CONN_MAX_AGE`` (``DB_CONN_MAX_AGE``; 0: after every task) or one
    that failed and is no longer usable, and keep the others for the next task. After a task
    that did not succeed (it raised, asked for a retry, or its soft time limit interrupted it,
    perhaps mid-query) every connection is closed: Django cannot always tell that one is
    broken (celery/celery#9824). Not for a task run eagerly, inside its caller's connection."""
    if task is None or getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections, connections

    if state is not None and state != "SUCCESS":
        connections.close_all()
    else:
        close_old_connections()


logger = logging.getLogger(__name__)


@functools.cache
def periodic_task_names() -> frozenset[str]:
    """The tasks beat sends (the schedule in settings): those that report a heartbeat. Read
    once per process, not on every task's success (issue 13: the heartbeat's handler was
    3.5 % of the relay worker's CPU in a profile of make bench-lifecycle)."""
    return frozenset(entry["task"] for entry in app.conf.beat_schedule.values())


# A heartbeat is a time to the second; a task kicked many times a second (the relay, the
# consumers) records it at most this often per process, not once a run.
HEARTBEAT_RESOLUTION_SECONDS = 1.0
_recorded: dict[str, float] = {}


@task_success.connect
def _record_heartbeat(sender: Task | None = None, **_: Any) -> None:
    """A periodic task succeeded: record when (common/heartbeats.py). A Redis error is logged,
    never raised: the task's own work is done and must not be retried for this."""
    if sender is None or sender.name not in periodic_task_names():
        return
    now = time.time()
    if now - _recorded.get(sender.name, 0.0) < HEARTBEAT_RESOLUTION_SECONDS:
        return
    try:
        heartbeat_record(sender.name, now)
        _recorded[sender.name] = now
    except Exception:
        logger.warning("could not record the heartbeat of %s", sender.name, exc_info=True)
