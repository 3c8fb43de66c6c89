"""Bearer API-key authentication: the key is hashed and looked up; the merchant is the user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

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


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[MerchantUser, ApiKey] | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        # Exactly "Bearer <key>": one space and nothing around the key, as RFC 6750 writes it.
        scheme, _, raw = header.partition(" ")
        if (
            scheme != self.keyword
            or not raw.startswith(("sk_test_", "sk_live_"))
            or any(char.isspace() for char in raw)
        ):
            raise exceptions.AuthenticationFailed("invalid API key", code="invalid_api_key")
        try:
            key = ApiKey.objects.select_related("merchant").get(
                key_hash=hash_api_key(raw), revoked_at__isnull=True
            )
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed(
                "invalid API key", code="invalid_api_key"
            ) from None
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
            "description": "Your API key: 'Authorization: Bearer sk_test_…' or sk_live_…",
        }
