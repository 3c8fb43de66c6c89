"""JSON log lines (common/logging.py), each carrying the bound correlation id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from common.correlation import bind_correlation_id, clear_correlation_id
from common.logging import json_formatter


@pytest.fixture(autouse=True)
def _no_correlation_id() -> Iterator[None]:
    clear_correlation_id()
    yield
    clear_correlation_id()


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aegispay.test", logging.WARNING, __file__, 1, message, args, None)


def test_a_record_is_one_json_object_with_level_logger_time_and_correlation_id() -> None:
    bind_correlation_id("req-7")

    line = json_formatter().format(record("charged %s", "pay_1"))

    assert "\n" not in line
    logged = json.loads(line)
    assert logged.pop("timestamp").endswith("Z")
    assert logged == {
        "event": "charged pay_1",
        "level": "warning",
        "logger": "aegispay.test",
        "correlation_id": "req-7",
    }


def test_without_a_correlation_id_none_is_logged() -> None:
    logged = json.loads(json_formatter().format(record("idle")))

    assert "correlation_id" not in logged
