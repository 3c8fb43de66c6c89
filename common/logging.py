"""JSON logs through structlog, with the correlation id bound in contextvars."""

from __future__ import annotations

import logging

import structlog


def json_formatter() -> logging.Formatter:
    """Formatter for ``LOGGING``: stdlib records rendered as one JSON object a line."""
    return structlog.stdlib.ProcessorFormatter(
        processor=structlog.processors.JSONRenderer(),
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso"),
        ],
    )
