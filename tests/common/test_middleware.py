"""The correlation id of a request (common/middleware.py, common/correlation.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from common.correlation import clear_correlation_id, get_correlation_id
from common.middleware import CorrelationIdMiddleware


@pytest.fixture(autouse=True)
def _no_correlation_id() -> Iterator[None]:
    clear_correlation_id()
    yield
    clear_correlation_id()


def seen_during(request: HttpRequest) -> tuple[HttpResponse, list[str]]:
    """The response, and the correlation id the view ran under."""
    seen: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(get_correlation_id())
        return HttpResponse("ok")

    return CorrelationIdMiddleware(view)(request), seen


def test_a_well_formed_client_id_is_used_and_echoed() -> None:
    request = RequestFactory().get("/", HTTP_X_CORRELATION_ID="client-req.42_A")

    response, seen = seen_during(request)

    assert seen == ["client-req.42_A"]
    assert response["X-Correlation-Id"] == "client-req.42_A"
    assert get_correlation_id() == ""


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_X_CORRELATION_ID": ""},
        {"HTTP_X_CORRELATION_ID": "has space"},
        {"HTTP_X_CORRELATION_ID": "x" * 65},
        {"HTTP_X_CORRELATION_ID": "semi;colon"},
    ],
)
def test_otherwise_a_fresh_id_is_made_and_echoed(headers: dict[str, str]) -> None:
    request = RequestFactory().get("/", **headers)

    response, seen = seen_during(request)

    assert re.fullmatch(r"[0-9a-f]{32}", seen[0])
    assert response["X-Correlation-Id"] == seen[0]
    assert get_correlation_id() == ""
