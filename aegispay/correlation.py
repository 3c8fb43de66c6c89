"""The correlation id that follows a request into every Celery task it causes.

It lives in structlog's contextvars, so every log line carries it; services read it to stamp
events, and tasks receive it as an argument and bind it again in the worker.
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
    structlog.contextvars.bind_contextvars(**{_KEY: value})


def clear_correlation_id() -> None:
    structlog.contextvars.unbind_contextvars(_KEY)
