"""The correlation id that follows a request into every Celery task it causes.

It lives in structlog's contextvars, so every log line carries it; services read it to stamp
events. A request binds one in ``common/middleware.py``; a Celery task binds the one it was
sent with, or a fresh one when it came without (work started by beat), and clears it when it
ends, both in ``aegispay/celery.py`` for every task.
"""

from __future__ import annotations

import uuid

import structlog

_KEY = "correlation_id"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    """The current correlation id, or an empty string outside any request or task."""
    return str(structlog.contextvars.get_contextvars().get(_KEY, ""))


def bind_correlation_id(value: str) -> None:
    """Bind ``value``. An empty value binds nothing and keeps the current id: a task sent
    without an id runs under the fresh one its worker bound for it before it started."""
    if value:
        structlog.contextvars.bind_contextvars(**{_KEY: value})


def clear_correlation_id() -> None:
    structlog.contextvars.unbind_contextvars(_KEY)
