"""Prometheus metrics at ``/metrics``.

Request counts and latencies are per web process. Payment and outbox figures are read from
PostgreSQL at scrape time, so they are the same whichever process answers and include the
work of Celery workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from django.db import connection
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from payments.gateway import unresolved_payment_ids

REQUESTS = Counter(
    "aegispay_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram("aegispay_http_request_seconds", "HTTP request latency", ["method", "route"])


class DatabaseCollector(Collector):
    """Payments per state and the outbox backlog, read at scrape time."""

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            GaugeMetricFamily("aegispay_payments", "Payments by state", labels=["status"]),
            GaugeMetricFamily(
                "aegispay_unresolved_payments",
                "Payments with a gateway operation unanswered past UNRESOLVED_ATTENTION_SECONDS",
            ),
            GaugeMetricFamily("aegispay_outbox_pending", "Outbox messages not yet published"),
            GaugeMetricFamily(
                "aegispay_outbox_oldest_pending_seconds", "Age of the oldest unpublished message"
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families ``collect`` yields, without a query: the collector is registered at
        import, before migrations may have run, and registration calls ``describe``."""
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        payments, unresolved, backlog, oldest = self._families()
        unresolved.add_metric([], unresolved_payment_ids().count())
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM payments_payment GROUP BY status")
            for status, count in cursor.fetchall():
                payments.add_metric([status], count)
            cursor.execute(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) "
                "FROM outbox_outboxmessage WHERE state = 'pending'"
            )
            count, age = cursor.fetchone()
        backlog.add_metric([], count)
        oldest.add_metric([], float(age))
        yield from (payments, unresolved, backlog, oldest)


_collector = DatabaseCollector()
REGISTRY.register(_collector)


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every request by its URL pattern (not its path, to bound labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response
