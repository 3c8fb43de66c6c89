"""Bearer API-key authentication: the key is hashed and looked up; the merchant is the user."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from common.rate_limit import Bucket, Decision, client_ip, limiter

from .merchants import hash_api_key
from .models import ApiKey, Merchant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MerchantUser:
    """``request.user`` for API calls: the calling merchant and the key it used."""

    merchant: Merchant
    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def livemode(self) -> bool:
        """Whether the caller uses a live key: it sees and makes only objects of its mode."""
        return self.api_key.live

    @property
    def actor(self) -> str:
        """How events name this caller: ``api_key:<display prefix>``."""
        return f"api_key:{self.api_key.prefix}"


def merchant_user(request: Request) -> MerchantUser:
    """The caller of an authenticated API view: ``request.user``, typed as what it is.

    The stubs type ``request.user`` as Django's user model; for the merchant API it is always
    the ``MerchantUser`` that ``ApiKeyAuthentication`` returned, since ``IsAuthenticated`` (the
    default permission) refuses every request that it did not authenticate. A cast, not a check:
    the permission has already run when a handler reads the caller.
    """
    return cast(MerchantUser, request.user)


class Owner(TypedDict):
    """Whose objects a merchant API call may see: the merchant's, of its key's mode. The API's
    selectors take these two keywords (``selectors.payment_get(**owner(request), ...)``)."""

    merchant: Merchant
    livemode: bool


def owner(request: Request) -> Owner:
    caller = merchant_user(request)
    return {"merchant": caller.merchant, "livemode": caller.livemode}


def key_bucket(key: ApiKey) -> Bucket:
    """An API key's request budget: its own, or the default."""
    return Bucket(
        rate=key.rate_limit_per_second or settings.API_RATE_LIMIT_PER_SECOND,
        burst=key.rate_limit_burst or settings.API_RATE_LIMIT_BURST,
    )


def _client_bucket() -> Bucket:
    return Bucket(
        rate=settings.API_CLIENT_RATE_LIMIT_PER_SECOND, burst=settings.API_CLIENT_RATE_LIMIT_BURST
    )


def _limit(request: Request, scope: str, name: str, bucket: Bucket) -> None:
    """Take a token, or refuse with ``429 rate_limited``."""
    _enforce(request, limiter.take(scope, name, bucket))


def _enforce(request: Request, decision: Decision | None) -> None:
    """Refuse with ``429 rate_limited`` if ``decision`` does. It stays on the request for
    ``RateLimitHeadersMiddleware``, which puts its ``RateLimit-*`` headers on the answer."""
    if decision is None:
        return  # Redis failed: let it through (counted by the limiter)
    request._request.rate_limit = decision  # type: ignore[attr-defined]  # read by the middleware
    if not decision.allowed:
        raise exceptions.Throttled(wait=max(1, decision.retry_after))


# --- the keys this process has found, kept between requests (issue 13) ---
#
# A request whose key this process found before skips the database: its hash maps to the key
# (with its merchant) and the Redis generation of keys it was read at. Every save or delete of an
# ApiKey or a Merchant (revoke, roll, scopes, limits, the admin) adds one to the generation after
# its commit, and every request reads the generation in the round trip that takes its rate-limit
# token: when it moved, this process forgets every key it kept and reads the database again. So
# a revocation takes effect on the next request. If Redis cannot be read, nothing kept is used;
# if it could not be written at a change (Redis down at that moment), a key is kept at most
# ``API_KEY_CACHE_SECONDS``.
KEYS_GENERATION = "aegispay:api_keys:generation"
# Entries past this count are dropped all together (a process sees few keys at a time).
_KEPT_MAX = 10_000


@dataclass(frozen=True)
class _Kept:
    key: ApiKey
    generation: bytes | None
    until: float  # time.monotonic()


_kept: dict[str, _Kept] = {}


def keys_changed() -> None:
    """After the commit of any change to a key or a merchant: every process forgets the keys it
    kept (``post_save`` and ``post_delete`` of both call this; payments/apps.py)."""

    def bump() -> None:
        if not limiter.incr(KEYS_GENERATION):
            logger.warning(
                "could not announce an API key change; kept keys expire within %s s",
                settings.API_KEY_CACHE_SECONDS,
            )

    transaction.on_commit(bump, robust=True)
    _kept.clear()


def _usable(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def _lookup(
    hashed: str, now: datetime, generation: tuple[bool, bytes | None] | None = None
) -> ApiKey | None:
    """The live key of this hash from the database, kept for the next requests when the
    generation could be read before it (a change committed after that read moves it again).
    ``generation``: ``(readable, value)`` as a round trip of this request read it already."""
    readable, value = limiter.read(KEYS_GENERATION) if generation is None else generation
    key = (
        ApiKey.objects.select_related("merchant")
        .filter(key_hash=hashed, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if key is not None and readable and settings.API_KEY_CACHE_SECONDS > 0:
        if len(_kept) >= _KEPT_MAX:
            _kept.clear()
        _kept[hashed] = _Kept(key, value, time.monotonic() + settings.API_KEY_CACHE_SECONDS)
    return key


# Secret keys and restricted keys, in both modes.
KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")
# ``last_used_at`` is written at most this often per key: one UPDATE a minute, not one a request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _note_use(key: ApiKey, now: datetime) -> None:
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional, so concurrent requests of one key write it once between them.
    cutoff = now - LAST_USED_RESOLUTION
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff)
    ).update(last_used_at=now)
    key.last_used_at = now


def _admit(
    request: Request, key: ApiKey, now: datetime, decision: Decision | None
) -> tuple[MerchantUser, ApiKey]:
    """Let ``key``'s request through, unless ``decision`` (its rate-limit token) refuses it."""
    _enforce(request, decision)
    _note_use(key, now)
    return MerchantUser(merchant=key.merchant, api_key=key), key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Bearer API keys, and the rate limits: each key's budget, and a budget per client address
    for requests with no key or a wrong one, so guessing keys is as limited as using one."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[MerchantUser, ApiKey] | None:
        header = request.headers.get("Authorization", "")
        if not header:
            _limit(request, "client", client_ip(request._request), _client_bucket())
            return None
        # Exactly "Bearer <key>": one space and nothing around the key, as RFC 6750 writes it.
        scheme, _, raw = header.partition(" ")
        key = None
        now = timezone.now()
        if (
            scheme == self.keyword
            and raw.startswith(KEY_PREFIXES)
            and not any(char.isspace() for char in raw)
        ):
            hashed = hash_api_key(raw)
            kept = _kept.get(hashed)
            if kept is not None and kept.until > time.monotonic() and _usable(kept.key, now):
                # The token and the generation in one round trip.
                decision = limiter.take(
                    "api_key", kept.key.id, key_bucket(kept.key), watch=KEYS_GENERATION
                )
                if decision is not None and decision.watched == kept.generation:
                    return _admit(request, kept.key, now, decision)
                # Moved, or Redis unreadable: read the database, as on a first use, at the
                # generation this round trip read (no second attempt at a Redis that failed).
                _kept.clear()
                read = (True, decision.watched) if decision is not None else (False, None)
                key = _lookup(hashed, now, read)
                if key is not None and key.id == kept.key.id:
                    return _admit(request, key, now, decision)  # its token is taken already
            else:
                key = _lookup(hashed, now)
        if key is None:
            _limit(request, "client", client_ip(request._request), _client_bucket())
            raise exceptions.AuthenticationFailed("invalid API key", code="invalid_api_key")
        return _admit(request, key, now, limiter.take("api_key", key.id, key_bucket(key)))

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The schema's security scheme for ``ApiKeyAuthentication``: HTTP bearer, named
    ``bearerAuth``. drf-spectacular registers an extension when its class is defined, so it
    lives here, beside the class it describes, which DRF imports for every API view."""

    target_class = ApiKeyAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "Your API key: 'Authorization: Bearer sk_test_…' (or sk_live_…, rk_…)",
        }
