"""The webhook tests' fixtures: a merchant's receiver on a real local HTTP server."""

from __future__ import annotations

from tests.webhooks.receivers import receivers

__all__ = ["receivers"]
