"""``Idempotency-Key`` for every merchant ``POST``, as API.md describes it.

A key is claimed by inserting its row in a transaction of its own, so that a concurrent request
with the same key sees it at once (``409 idempotency_key_in_use``). The request then runs inside
one transaction that also stores its response on the key row: the payment and the stored
response commit together or not at all. A request that dies leaves the key ``in_progress``;
after ``IDEMPOTENCY_LOCK_TIMEOUT_SECONDS`` a retry may take it over (nothing it did committed).
Responses of 5xx are not stored, and release the key so the client can retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from .errors import IdempotencyKeyInUse, IdempotencyKeyReused, PaymentError
from .models import IdempotencyKey, Merchant
from .validation import validate_idempotency_key

REPLAY_HEADER = "Idempotent-Replayed"


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What must match for a replay: method, path and the body (as JSON, key order ignored)."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def _claim(
    *, merchant: Merchant, key: str, method: str, path: str, fingerprint: str
) -> IdempotencyKey | Response:
    """Take the key for this request, or answer from what the key already holds."""
    now = timezone.now()
    for _ in range(2):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    merchant=merchant,
                    key=key,
                    method=method,
                    path=path,
                    fingerprint=fingerprint,
                    locked_at=now,
                )
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(merchant=merchant, key=key).first()
        if existing is None:
            continue  # released in between: claim again
        ttl = timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
        if existing.created_at < now - ttl:
            # Expired: forget it (compare-and-delete, so only one request does) and claim anew.
            IdempotencyKey.objects.filter(pk=existing.pk, created_at=existing.created_at).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request",
                param="Idempotency-Key",
            )
        if existing.state == IdempotencyKey.State.COMPLETED:
            return Response(
                existing.response_body,
                status=existing.response_code,
                headers={REPLAY_HEADER: "true"},
            )
        stale = now - timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS)
        if existing.locked_at < stale:
            taken = IdempotencyKey.objects.filter(
                pk=existing.pk, state=IdempotencyKey.State.IN_PROGRESS, locked_at=existing.locked_at
            ).update(locked_at=now)
            if taken:
                existing.locked_at = now
                return existing
        raise IdempotencyKeyInUse(
            "a request with this Idempotency-Key is still being processed",
            param="Idempotency-Key",
        )
    raise IdempotencyKeyInUse(
        "a request with this Idempotency-Key is still being processed", param="Idempotency-Key"
    )


class _NotStored(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def idempotent(handler: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate an APIView ``post``: runs it once per ``Idempotency-Key`` (when one is sent).

    The handler runs inside a transaction that also stores its response; its ``on_commit``
    work therefore runs only once both are committed.
    """

    @wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        raw_key = request.headers.get("Idempotency-Key")
        if raw_key is None:
            return handler(view, request, *args, **kwargs)
        key = validate_idempotency_key(raw_key)
        merchant = request.user.merchant
        body = request._request.body  # the raw bytes; Django enforces the size limit here
        claimed = _claim(
            merchant=merchant,
            key=key,
            method=request.method,
            path=request.path,
            fingerprint=request_fingerprint(request.method, request.path, body),
        )
        if isinstance(claimed, Response):
            return claimed
        try:
            with transaction.atomic():
                try:
                    response = handler(view, request, *args, **kwargs)
                except (PaymentError, APIException) as exc:
                    response = view.handle_exception(exc)
                if response.status_code >= 500:
                    raise _NotStored(response)
                IdempotencyKey.objects.filter(pk=claimed.pk).update(
                    state=IdempotencyKey.State.COMPLETED,
                    response_code=response.status_code,
                    response_body=response.data,
                )
        except _NotStored as not_stored:
            IdempotencyKey.objects.filter(pk=claimed.pk).delete()
            return not_stored.response
        except BaseException:
            IdempotencyKey.objects.filter(pk=claimed.pk).delete()
            raise
        return response

    return wrapper
