"""What an API key may do: the scope catalogue, and the permission every API view runs.

A secret key (``sk_test_…``, ``sk_live_…``) may do everything. A restricted key (``rk_…``)
may do only what its scopes grant; ``<resource>:write`` grants ``<resource>:read`` too. Every
API view names the scope each of its methods needs (``required_scopes``); a view that names
none for a method refuses restricted keys, so a new endpoint is closed to them until it says
what it needs (``tests/payments/test_api_keys.py`` checks that every view says).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .errors import PaymentError

SCOPES = (
    "payments:read",
    "payments:write",
    "refunds:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "keys:write",
    "connector_accounts:write",
)


class ScopeMissing(PaymentError):
    code = "scope_missing"
    status = 403


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """Every scope that ``scopes`` grant: themselves, and ``x:read`` for each ``x:write``."""
    held = frozenset(scopes)
    implied = {scope.removesuffix(":write") + ":read" for scope in held if scope.endswith(":write")}
    return held | implied


def rights(*, restricted: bool, scopes: Iterable[str]) -> frozenset[str]:
    """What a key of this kind may do: every scope for a secret key, its own (and what they
    imply) for a restricted one."""
    return granted(scopes) if restricted else granted(SCOPES)


def key_grants(key: Any) -> frozenset[str]:
    """What an ``ApiKey`` may do (``rights`` of its kind and scopes)."""
    return rights(restricted=key.restricted, scopes=key.scopes)


class ScopePermission(BasePermission):
    """Refuses a key outside the scope the view names for the method (``403 scope_missing``).
    Runs after authentication and before the view, so a refused request stores nothing
    (not even its ``Idempotency-Key``)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        key = getattr(request.user, "api_key", None)
        if key is None:
            return True  # no merchant caller: IsAuthenticated (or AllowAny) decides
        method = "get" if request.method in ("HEAD", "OPTIONS") else (request.method or "").lower()
        needed = getattr(view, "required_scopes", {}).get(method)
        if needed is None:
            if not key.restricted:
                return True
            raise ScopeMissing("this endpoint is not open to restricted keys")
        if needed not in key_grants(key):
            raise ScopeMissing(f"this key lacks the scope {needed}")
        return True
