"""``Idempotency-Key`` for every merchant ``POST``, as docs/API.md describes it: scoped to the
merchant and the mode of its key (a test and a live request may use the same key).

A key is claimed by inserting its row in a transaction of its own, so that a concurrent request
with the same key sees it at once (``409 idempotency_key_in_use``). The request then runs inside
one transaction that also stores its response on the key row: the payment and the stored
response commit together or not at all. A request that dies leaves the key ``in_progress``;
after ``IDEMPOTENCY_LOCK_TIMEOUT_SECONDS`` a retry may take it over (nothing it did committed).
The response is stored only while the request still holds the key (the ``locked_at`` it
claimed it with): a request whose key was taken over meanwhile rolls back entirely and answers
``409 idempotency_key_in_use``, so one key never commits two requests.

Which answers a key keeps (replayed with ``Idempotent-Replayed: true`` until it expires):

* kept, final: every answer below 500 that the request itself earned: a success, a validation
  error (400, 422), a missing object (404), a decline (402), ``amount_exceeded``, and the state
  machine's refusal (``409 invalid_state_transition``: the payment's state answered the request);
* not kept, the key is released and the next request with it runs: 5xx, an exception, and the
  transient conflicts (``DomainError.transient``, ``common/errors.py``):
  ``409 version_conflict`` (stale ``If-Match``), ``409 operation_in_progress`` (another
  gateway operation is open) and ``409 idempotency_key_in_use``. Those describe other work at
  that moment, not the request, and nothing of the request committed.

A key is kept for ``IDEMPOTENCY_KEY_TTL_HOURS``. Past it, the next request with the key runs
anew, and the beat task ``idempotency_keys_purge`` deletes it, in batches of
``IDEMPOTENCY_PURGE_BATCH_SIZE``, every ``BEAT_IDEMPOTENCY_PURGE_SECONDS``. Neither ever forgets
a key whose request is still running (``in_progress`` with a lock younger than the lock
timeout), however old the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, overload

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from common.errors import DomainError

from .authentication import MerchantUser, merchant_user
from .card_data import reject_card_number
from .errors import IdempotencyKeyInUse, IdempotencyKeyReused, ValidationFailed
from .models import IdempotencyKey, Merchant

REPLAY_HEADER = "Idempotent-Replayed"

_PRINTABLE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def validate_idempotency_key(value: str) -> str:
    """The ``Idempotency-Key`` header's value. A plain function, not a serializer: one header
    string, read by this decorator before the view (and its body serializer) runs."""
    if not _PRINTABLE_KEY.match(value):
        raise ValidationFailed(
            "idempotency_key_invalid",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            param="Idempotency-Key",
        )
    reject_card_number(value, param="Idempotency-Key")  # the key is stored as sent
    return value


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What must match for a replay: method, path and the body (as JSON, key order ignored)."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def _forgettable(now: datetime) -> QuerySet[IdempotencyKey]:
    """Keys past the retention whose request is not running: completed, or in progress under a
    lock older than the lock timeout (the request died; nothing of it committed)."""
    expired = now - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    stale = now - timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS)
    return IdempotencyKey.objects.filter(created_at__lt=expired).filter(
        Q(state=IdempotencyKey.State.COMPLETED) | Q(locked_at__lt=stale)
    )


def idempotency_keys_purge(*, batch_size: int | None = None) -> int:
    """Delete the keys ``_forgettable`` names, in short transactions of at most ``batch_size``
    (default ``IDEMPOTENCY_PURGE_BATCH_SIZE``) rows each. Returns how many it deleted.

    Each batch locks its rows with ``SKIP LOCKED`` and checks them again under the lock, so a
    key a request is finishing or taking over right now is left for a later run.
    """
    size = batch_size or settings.IDEMPOTENCY_PURGE_BATCH_SIZE
    now = timezone.now()
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                _forgettable(now)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:size]
            )
            if batch:
                IdempotencyKey.objects.filter(pk__in=batch).delete()
        deleted += len(batch)
        if len(batch) < size:
            return deleted


def _claim(
    *, merchant: Merchant, livemode: bool, key: str, method: str, path: str, fingerprint: str
) -> IdempotencyKey | Response:
    """Take the key for this request, or answer from what the key already holds."""
    now = timezone.now()
    for _ in range(2):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    merchant=merchant,
                    livemode=livemode,
                    key=key,
                    method=method,
                    path=path,
                    fingerprint=fingerprint,
                    locked_at=now,
                )
        except IntegrityError:
            pass
        existing = IdempotencyKey.objects.filter(
            merchant=merchant, livemode=livemode, key=key
        ).first()
        if existing is None:
            continue  # released in between: claim again
        if _forgettable(now).filter(pk=existing.pk).exists():
            # Expired and not running: forget it (compare-and-delete, so only one request does)
            # and claim anew. An expired key whose request still runs answers as in use.
            _forgettable(now).filter(pk=existing.pk, locked_at=existing.locked_at).delete()
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


def _without(body: Any, fields: tuple[str, ...]) -> Any:
    if not fields or not isinstance(body, dict):
        return body
    return {name: value for name, value in body.items() if name not in fields}


class _NotStored(Exception):
    """The answer is not the key's: roll the request back and release the key."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Lost(_NotStored):
    """The key is no longer this request's: roll back and leave the key to its new owner."""


def _in_use(view: Any) -> Response:
    return view.handle_exception(
        IdempotencyKeyInUse(
            "a request with this Idempotency-Key is still being processed",
            param="Idempotency-Key",
        )
    )


def _release(claimed: IdempotencyKey) -> None:
    """Delete the key this request holds (not one another request took over meanwhile)."""
    IdempotencyKey.objects.filter(
        pk=claimed.pk, state=IdempotencyKey.State.IN_PROGRESS, locked_at=claimed.locked_at
    ).delete()


Replay = Callable[[MerchantUser, dict[str, Any]], dict[str, Any]]


Handler = Callable[..., Response]


@overload
def idempotent(handler: Handler) -> Handler: ...


@overload
def idempotent(
    *, secret_fields: tuple[str, ...] = (), replay: Replay | None = None
) -> Callable[[Handler], Handler]: ...


def idempotent(
    handler: Handler | None = None,
    *,
    secret_fields: tuple[str, ...] = (),
    replay: Replay | None = None,
) -> Handler | Callable[[Handler], Handler]:
    """Decorate an APIView ``post``: runs it once per ``Idempotency-Key`` (when one is sent).

    The handler runs inside a transaction that also stores its response; its ``on_commit``
    work therefore runs only once both are committed.

    An answer that shows a secret once (a webhook endpoint's signing secret) names it in
    ``secret_fields``: the key stores the answer without them, so no secret is kept in clear
    here and no replay shows it again. ``replay`` renders a stored success answer again at
    replay time (for example the object as it is now, not as it was), given the merchant.
    """
    if handler is None:
        return lambda inner: _idempotent(inner, secret_fields, replay)
    return _idempotent(handler, secret_fields, replay)


def _idempotent(
    handler: Callable[..., Response], secret_fields: tuple[str, ...], replay: Replay | None
) -> Callable[..., Response]:
    @wraps(handler)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        raw_key = request.headers.get("Idempotency-Key")
        if raw_key is None:
            return handler(view, request, *args, **kwargs)
        key = validate_idempotency_key(raw_key)
        caller = merchant_user(request)
        body = request._request.body  # the raw bytes; Django enforces the size limit here
        # A body the parser refuses (too deep, NUL, a card number: payments/parsers.py) is
        # answered before the key is claimed: nothing of it is stored, and the key stays free.
        request.data  # noqa: B018 (parses, or raises)
        # Only a hand-built HttpRequest has no method; one routed to a view always has it.
        method = request.method or ""
        claimed = _claim(
            merchant=caller.merchant,
            livemode=caller.livemode,
            key=key,
            method=method,
            path=request.path,
            fingerprint=request_fingerprint(method, request.path, body),
        )
        if isinstance(claimed, Response):
            if replay is not None and claimed.status_code < 300:
                claimed.data = replay(caller, claimed.data)
            return claimed
        try:
            with transaction.atomic():
                try:
                    response = handler(view, request, *args, **kwargs)
                except DomainError as exc:
                    response = view.handle_exception(exc)
                    if exc.transient:
                        raise _NotStored(response) from exc
                except APIException as exc:
                    response = view.handle_exception(exc)
                if response.status_code >= 500:
                    raise _NotStored(response)
                stored = IdempotencyKey.objects.filter(
                    pk=claimed.pk,
                    state=IdempotencyKey.State.IN_PROGRESS,
                    locked_at=claimed.locked_at,
                ).update(
                    state=IdempotencyKey.State.COMPLETED,
                    response_code=response.status_code,
                    response_body=_without(response.data, secret_fields),
                )
                if not stored:
                    # Taken over (or purged) after the lock timeout: another request owns the
                    # key now, so nothing of this one may commit.
                    raise _Lost(_in_use(view))
        except _Lost as lost:
            return lost.response
        except _NotStored as not_stored:
            _release(claimed)
            return not_stored.response
        except BaseException:
            _release(claimed)
            raise
        return response

    return wrapper
