"""/metrics: counts across every merchant, so never public. It answers only the scrape token
(METRICS_TOKEN) outside DEBUG, and no client can grow its label sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from backoffice.metrics import method_label
from tests.aegispay.test_deploy import manage, production
from tests.conftest import METRICS_TOKEN, scrape

pytestmark = pytest.mark.django_db


def test_with_no_token_set_metrics_answer_no_one_outside_debug(settings) -> None:
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 403
    assert b"aegispay_" not in response.content


def test_with_no_token_set_debug_serves_metrics(settings) -> None:
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert b"aegispay_payments" in response.content


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Bearer  {METRICS_TOKEN}", f"Basic {METRICS_TOKEN}", METRICS_TOKEN],
)
def test_anything_but_the_token_is_401(header: str | None) -> None:
    headers = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"aegispay_" not in response.content


def test_the_token_scrapes() -> None:
    assert 'aegispay_payments{status="initiated"}' in scrape()


def _method_labels() -> set[str]:
    return {
        sample.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "aegispay_http_requests"
        for sample in family.samples
    }


def test_made_up_methods_do_not_grow_the_labels() -> None:
    client = Client()
    for index in range(300):
        client.generic(f"X{index}", "/v1/payments")
    labels = _method_labels()
    assert "other" in labels
    assert labels <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "other"}
    assert method_label("GET") == "GET" and method_label("get") == "other"


@pytest.mark.parametrize("token", ["short", "x" * 31])
def test_a_weak_token_stops_start_up(tmp_path: Path, token: str) -> None:
    result = manage(production(tmp_path, METRICS_TOKEN=token), "check")
    assert result.returncode != 0
    assert "METRICS_TOKEN is too weak" in result.stderr
