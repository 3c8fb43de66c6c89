"""Bearer API-key authentication: the key is hashed and looked up; the merchant is the user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, cast

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from common.rate_limit import Bucket, client_ip, limiter

from .merchants import hash_api_key
from .models import ApiKey, Merchant


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
    """Take a token, or refuse with ``429 rate_limited``. The decision stays on the request for
    ``RateLimitHeadersMiddleware``, which puts its ``RateLimit-*`` headers on the answer."""
    decision = limiter.take(scope, name, bucket)
    if decision is None:
        return  # Redis failed: let it through (counted by the limiter)
    request._request.rate_limit = decision  # type: ignore[attr-defined]  # read by the middleware
    if not decision.allowed:
        raise exceptions.Throttled(wait=max(1, decision.retry_after))


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
            key = (
                ApiKey.objects.select_related("merchant")
                .filter(key_hash=hash_api_key(raw), revoked_at__isnull=True)
                .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
                .first()
            )
        if key is None:
            _limit(request, "client", client_ip(request._request), _client_bucket())
            raise exceptions.AuthenticationFailed("invalid API key", code="invalid_api_key")
        _limit(request, "api_key", key.id, key_bucket(key))
        _note_use(key, now)
        return MerchantUser(merchant=key.merchant, api_key=key), key

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
