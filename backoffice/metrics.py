"""Prometheus metrics at ``/metrics``.

Request counts and latencies are per web process. Payment and outbox figures are read at scrape
time through the apps' selectors, so they are the same whichever process answers and include
the work of Celery workers.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.heartbeats import heartbeats
from outbox.selectors import outbox_backlog
from payments.selectors import payment_counts_by_status, unresolved_payment_ids

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
        for status, count in payment_counts_by_status().items():
            payments.add_metric([status], count)
        outbox = outbox_backlog()
        backlog.add_metric([], outbox.pending)
        age = 0.0
        if outbox.oldest_pending_at is not None:
            age = max(0.0, (timezone.now() - outbox.oldest_pending_at).total_seconds())
        oldest.add_metric([], age)
        yield from (payments, unresolved, backlog, oldest)


class HeartbeatCollector(Collector):
    """Each periodic task's schedule interval and last success, read from Redis at scrape
    time, so that an alert can fire when ``time() - last_success`` grows past a few intervals
    (a beat that stopped, workers that stopped taking its tasks). Labelled by the beat
    schedule's task names only."""

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "aegispay_periodic_task_interval_seconds",
                "How often beat sends the periodic task",
                labels=["task"],
            ),
            GaugeMetricFamily(
                "aegispay_periodic_task_last_success_timestamp_seconds",
                "When the periodic task last succeeded (Unix time; absent: never yet)",
                labels=["task"],
            ),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        interval, last = self._families()
        schedule = {
            entry["task"]: float(entry["schedule"])
            for entry in settings.CELERY_BEAT_SCHEDULE.values()
        }
        succeeded = heartbeats()
        for task in sorted(schedule):
            interval.add_metric([task], schedule[task])
            if task in succeeded:
                last.add_metric([task], succeeded[task])
        yield from (interval, last)


_collector = DatabaseCollector()
REGISTRY.register(_collector)
REGISTRY.register(HeartbeatCollector())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape: for ``Authorization: Bearer <METRICS_TOKEN>`` only; with no token set, for
    no one (403) unless DEBUG. The figures count every merchant's payments: never public."""
    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(supplied, f"Bearer {token}".encode()):
            response = HttpResponse(
                "send Authorization: Bearer <METRICS_TOKEN>\n",
                status=401,
                content_type="text/plain",
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not settings.DEBUG:
        return HttpResponse(
            "/metrics is closed: set METRICS_TOKEN and scrape with it\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


# The methods HTTP defines; any other method a client makes up counts as "other", so a client
# cannot grow the label set (5,000 made-up methods were 5,000 new series each).
_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])


def method_label(method: str | None) -> str:
    return method if method in _METHODS else "other"


class MetricsMiddleware:
    """Counts and times every request by its URL pattern (not its path, to bound labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "unmatched"
        method = method_label(request.method)
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        return response
