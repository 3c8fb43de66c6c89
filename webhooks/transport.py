"""Sending one webhook request: the signed POST to the address the URL guard checked.

The connection is pinned to that address (the host name is kept for the Host header and TLS),
so a second, different DNS answer cannot slip in between the check and the request. Redirects
are never followed: a 3xx is a failed try. The signature header is made by ``signing.py``, the
module merchants copy to verify it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import urllib3
from django.conf import settings

from .errors import WebhookError
from .signing import signature_headers
from .url_guard import WebhookTarget, webhook_url_target

_EXCERPT_BYTES = 500
_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class HttpResult:
    """What one try got: the status code (None without an HTTP answer), how long it took, the
    error (empty on 2xx) and the start of the answer, as stored on ``WebhookAttempt``."""

    status_code: int | None
    latency_ms: int
    error: str
    excerpt: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and a receiver may answer anything."""
    return value.replace("\x00", "\ufffd")


def _post(target: WebhookTarget, body: bytes, headers: dict[str, str]) -> HttpResult:
    """One POST to the checked address; never raises for what the receiver or network does."""
    timeout = urllib3.Timeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            assert_hostname=target.host,
            server_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            target.address, target.port, timeout=timeout, retries=False, maxsize=1
        )
    started = time.monotonic()
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            excerpt = response.read(_EXCERPT_BYTES).decode("utf-8", "replace")
        finally:
            response.release_conn()
        status: int | None = response.status
        error = "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib3.exceptions.TimeoutError as exc:
        status, excerpt = None, ""
        error = f"timeout after {settings.WEBHOOK_TIMEOUT_SECONDS}s: {exc}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        status, excerpt = None, ""
        error = f"{type(exc).__name__}: {exc}"
    finally:
        pool.close()
    latency_ms = round((time.monotonic() - started) * 1000)
    return HttpResult(status, latency_ms, _text(error)[:_ERROR_CHARS], _text(excerpt))


def webhook_send(*, url: str, secrets: list[str], message_id: str, payload: Any) -> HttpResult:
    """Re-check ``url`` (DNS may have changed), sign the JSON body with each of ``secrets``
    (``signing.signature_headers``: AegisPay's and Standard Webhooks' headers, ``message_id``
    as ``webhook-id``) and POST it.

    Never raises for what the URL, the receiver or the network does: a refused URL is a
    result without a status code, like a connection error.
    """
    started = time.monotonic()
    try:
        target = webhook_url_target(url)
    except WebhookError as exc:
        latency_ms = round((time.monotonic() - started) * 1000)
        return HttpResult(None, latency_ms, f"{exc.code}: {exc.message}"[:_ERROR_CHARS], "")
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "AegisPay-Webhooks/1",
        "Accept-Encoding": "identity",
        # Signed with the real clock: the receiver compares it with its own.
        **signature_headers(secrets, message_id, body, int(time.time())),
    }
    return _post(target, body, headers)
