"""Liveness and readiness. Readiness checks every dependency a request or a task needs."""

from __future__ import annotations

from collections.abc import Callable

from celery import current_app
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django_redis import get_redis_connection


def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check(name: str, probe: Callable[[], object]) -> tuple[str, str]:
    try:
        probe()
    except Exception as exc:
        return name, f"error: {type(exc).__name__}: {exc}"
    return name, "ok"


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    get_redis_connection("default").ping()


def _broker() -> None:
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


def ready(request: HttpRequest) -> JsonResponse:
    checks = dict(
        _check(n, p) for n, p in (("database", _database), ("redis", _redis), ("broker", _broker))
    )
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
