"""``Idempotency-Key`` for every merchant ``POST``, as docs/API.md describes it: scoped to the
merchant and the mode of its key (a test and a live request may use the same key).

A request with a key runs in one transaction (issue 13: one commit per create, not three). Its
first statement takes the key's PostgreSQL advisory lock without waiting
(``pg_try_advisory_xact_lock``) and reads the key's row: a concurrent request with the same key
finds the lock taken and answers ``409 idempotency_key_in_use`` at once; a finished one's row is
replayed. The handler then runs, and its answer is stored by inserting the key's row, in the
same transaction: the payment and the stored response commit together or not at all, and the
lock is released by that commit or rollback. A request that dies therefore leaves nothing: its
transaction rolls back, the lock with it, and a retry runs anew. The key's unique constraint
settles the one race the lock leaves open (a request that commits between another's snapshot
and its lock): the loser's insert fails, it rolls back whole and answers from the winner's row.
Rows ``in_progress`` come only from older releases, which claimed a key in a transaction of its
own; they are honoured as they were (in use until ``IDEMPOTENCY_LOCK_TIMEOUT_SECONDS``).

Which answers a key keeps (replayed with ``Idempotent-Replayed: true`` until it expires):

* kept, final: every answer below 500 that the request itself earned: a success, a validation
  error (400, 422), a missing object (404), a decline (402), ``amount_exceeded``, and the state
  machine's refusal (``409 invalid_state_transition``: the payment's state answered the request);
* not kept, the request rolls back and the next request with the key runs: 5xx, an exception,
  and the transient conflicts (``DomainError.transient``, ``common/errors.py``):
  ``409 version_conflict`` (stale ``If-Match``), ``409 operation_in_progress`` (another
  gateway operation is open) and ``409 idempotency_key_in_use``. Those describe other work at
  that moment, not the request, and nothing of the request committed.

A key is kept for ``IDEMPOTENCY_KEY_TTL_HOURS``. Past it, the next request with the key runs
anew, and the beat task ``idempotency_keys_purge`` deletes it, in batches of
``IDEMPOTENCY_PURGE_BATCH_SIZE``, every ``BEAT_IDEMPOTENCY_PURGE_SECONDS``. Neither ever forgets
a key whose request is still running: a request that found its key expired deletes the old row
in its own transaction, so the purge (``SKIP LOCKED``) passes it by until that commits.
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

from common.db import bound_cursor
from common.errors import DomainError
from common.rows import execute, insert_statement

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
    return IdempotencyKey.objects.filter(created_at__lt=expired).filter(
        Q(state=IdempotencyKey.State.COMPLETED) | Q(locked_at__lt=_stale_before(now))
    )


def _stale_before(now: datetime) -> datetime:
    """An ``in_progress`` key locked before this has a dead request (the lock timeout)."""
    return now - timedelta(seconds=settings.IDEMPOTENCY_LOCK_TIMEOUT_SECONDS)


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


# One statement: this transaction takes the key's advisory lock (without waiting) and reads
# the key's row if there is one. The lock is the transaction's until it ends, so a concurrent
# request with the key finds it taken and answers 409 at once; the unique constraint on the
# key's row settles the one race the lock leaves (a request that committed between this
# statement's snapshot and its lock: the second one's INSERT then fails, and it replays).
_CLAIM_SQL = """
SELECT pg_try_advisory_xact_lock(%s),
       (SELECT id FROM payments_idempotencykey
        WHERE merchant_id = %s AND livemode = %s AND key = %s)
"""


def _lock_id(merchant_id: str, livemode: bool, key: str) -> int:
    """The key's advisory lock: 64 bits of a hash of what scopes it (a collision would only
    make one of two unrelated requests answer 409 in use, one time in 2**64)."""
    digest = hashlib.blake2b(
        f"{merchant_id}\x00{int(livemode)}\x00{key}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _in_use() -> IdempotencyKeyInUse:
    return IdempotencyKeyInUse(
        "a request with this Idempotency-Key is still being processed", param="Idempotency-Key"
    )


def _claim(*, merchant: Merchant, livemode: bool, key: str, fingerprint: str) -> Response | None:
    """Inside the request's transaction: take the key for this request (``None``: run it), or
    answer from what the key already holds (a replay), or raise ``IdempotencyKeyInUse`` /
    ``IdempotencyKeyReused``."""
    with bound_cursor() as cursor:  # prepared: one text, run on every create (common/db.py)
        cursor.execute(
            _CLAIM_SQL, [_lock_id(merchant.pk, livemode, key), merchant.pk, livemode, key]
        )
        got, existing_id = cursor.fetchone()
    if not got:
        raise _in_use()
    if existing_id is None:
        return None
    now = timezone.now()
    existing = IdempotencyKey.objects.get(pk=existing_id)
    if _forgettable(now).filter(pk=existing.pk).exists():
        # Expired (or an in-progress row left by a request of an older release that died):
        # forget it under the key's lock and run anew.
        existing.delete()
        return None
    if existing.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request", param="Idempotency-Key"
        )
    if existing.state == IdempotencyKey.State.COMPLETED:
        return Response(
            existing.response_body, status=existing.response_code, headers={REPLAY_HEADER: "true"}
        )
    # In progress: a row an older release committed before its request ran. Past the lock
    # timeout that request died (nothing of it committed): take the key over.
    if existing.locked_at < _stale_before(now):
        existing.delete()
        return None
    raise _in_use()


def _without(body: Any, fields: tuple[str, ...]) -> Any:
    if not fields or not isinstance(body, dict):
        return body
    return {name: value for name, value in body.items() if name not in fields}


class _NotStored(Exception):
    """The answer is not the key's: roll the request back, key and all."""

    def __init__(self, response: Response) -> None:
        self.response = response


class _Raced(Exception):
    """Another request with the key committed first: roll back, then answer from its row."""


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
        fingerprint = request_fingerprint(method, request.path, body)
        for _ in range(2):
            try:
                return _run_once(
                    view,
                    request,
                    args,
                    kwargs,
                    handler=handler,
                    caller=caller,
                    key=key,
                    fingerprint=fingerprint,
                    secret_fields=secret_fields,
                    replay=replay,
                )
            except _Raced:
                continue  # the winner's row is committed now: the next pass answers from it
        raise _in_use()

    return wrapper


def _run_once(
    view: Any,
    request: Request,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    handler: Callable[..., Response],
    caller: MerchantUser,
    key: str,
    fingerprint: str,
    secret_fields: tuple[str, ...],
    replay: Replay | None,
) -> Response:
    """One transaction: claim the key, run the handler, store its answer with the key's row.
    Raises ``_Raced`` when another request's row won the unique constraint (nothing of this
    one committed)."""
    try:
        with transaction.atomic():
            claimed = _claim(
                merchant=caller.merchant,
                livemode=caller.livemode,
                key=key,
                fingerprint=fingerprint,
            )
            if claimed is not None:
                if replay is not None and claimed.status_code < 300:
                    claimed.data = replay(caller, claimed.data)
                return claimed
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
            row = IdempotencyKey(
                merchant=caller.merchant,
                livemode=caller.livemode,
                key=key,
                method=request.method or "",
                path=request.path,
                fingerprint=fingerprint,
                state=IdempotencyKey.State.COMPLETED,
                locked_at=timezone.now(),
                response_code=response.status_code,
                response_body=_without(response.data, secret_fields),
            )
            try:
                # Its INSERT without the ORM's compiler (common/rows.py; issue 13).
                execute(insert_statement(row))
            except IntegrityError as exc:
                # Raised on at once, so the transaction (aborted by the error) rolls back whole.
                raise _Raced from exc
    except _NotStored as not_stored:
        return not_stored.response
    return response
