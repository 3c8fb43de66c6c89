"""Merchants and their API keys: creating, rolling and revoking keys, and a key's stored form.

A key is shown once, when it is made; only its SHA-256 and a display prefix are stored. A
restricted caller (``rk_…``) can never make or change a key that may do more than itself, so
``keys:write`` on a restricted key is no way to a secret key.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .errors import PaymentError, ValidationFailed
from .models import ApiKey, Merchant
from .scopes import SCOPES, ScopeMissing, key_grants, rights


class ApiKeyNotFound(PaymentError):
    code = "resource_missing"
    status = 404


class ApiKeyRolled(PaymentError):
    code = "api_key_rolled"
    status = 409


def hash_api_key(raw_key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _raw_key(*, live: bool, restricted: bool) -> str:
    return (
        f"{'rk' if restricted else 'sk'}_{'live' if live else 'test'}_{secrets.token_urlsafe(32)}"
    )


def api_key_scopes_validate(*, restricted: bool, scopes: list[str]) -> list[str]:
    """The scopes of a new key, deduplicated in catalogue order. A restricted key needs at least
    one; a secret key takes none (it may do everything)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValidationFailed(
            "scopes_invalid",
            f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}",
            param="scopes",
        )
    if restricted and not scopes:
        raise ValidationFailed(
            "scopes_invalid", "a restricted key needs at least one scope", param="scopes"
        )
    if not restricted and scopes:
        raise ValidationFailed(
            "scopes_invalid",
            "scopes apply to restricted keys only; send restricted: true",
            param="scopes",
        )
    return [scope for scope in SCOPES if scope in scopes]


def _within(caller: ApiKey | None, *, restricted: bool, scopes: list[str]) -> None:
    """Refuse when ``caller`` (None: staff) could not do everything a key with these rights
    could: no escalation through ``keys:write``."""
    if caller is None or not caller.restricted:
        return
    wanted = rights(restricted=restricted, scopes=scopes)
    beyond = sorted(wanted - key_grants(caller))
    if beyond:
        raise ScopeMissing(
            f"a restricted key cannot give or change rights it lacks itself ({beyond[0]})"
        )


def api_key_create(
    *,
    merchant: Merchant,
    live: bool = False,
    name: str = "",
    restricted: bool = False,
    scopes: list[str] | None = None,
    caller: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Make a key for ``merchant``; returns the row and the raw key, which is never stored.

    ``caller`` is the key asking (None: staff or a command). Raises ``ValidationFailed``
    (``scopes_invalid``) and ``ScopeMissing`` (a restricted caller asking beyond its own)."""
    checked = api_key_scopes_validate(restricted=restricted, scopes=list(scopes or []))
    _within(caller, restricted=restricted, scopes=checked)
    raw = _raw_key(live=live, restricted=restricted)
    key = ApiKey.objects.create(
        merchant=merchant,
        key_hash=hash_api_key(raw),
        prefix=raw[:12],
        live=live,
        name=name,
        restricted=restricted,
        scopes=checked,
    )
    return key, raw


def _key_locked(*, merchant: Merchant, caller: ApiKey | None, key_id: str) -> ApiKey:
    """The merchant's key, row-locked; another merchant's, a revoked one, or one of the other
    mode than the caller's (test keys see only test keys) is ``ApiKeyNotFound``."""
    keys = ApiKey.objects.select_for_update().filter(merchant=merchant, revoked_at__isnull=True)
    if caller is not None:
        keys = keys.filter(live=caller.live)
    try:
        return keys.get(pk=key_id)
    except ApiKey.DoesNotExist:
        raise ApiKeyNotFound(f"no such API key: {key_id}", param="id") from None


def api_key_roll(
    *, merchant: Merchant, caller: ApiKey | None, key_id: str, expires_in: int
) -> tuple[ApiKey, str]:
    """Replace a key with a new one like it (name, scopes, mode, rate limits), valid at once;
    the old one stays valid for ``expires_in`` seconds (0: it stops now).

    Under the old key's row lock: two rolls of one key cannot both succeed; the second is
    ``409 api_key_rolled`` (roll the key that replaced it instead)."""
    with transaction.atomic():
        old = _key_locked(merchant=merchant, caller=caller, key_id=key_id)
        _within(caller, restricted=old.restricted, scopes=old.scopes)
        if old.expires_at is not None:
            raise ApiKeyRolled("this key was rolled already; roll the key that replaced it")
        raw = _raw_key(live=old.live, restricted=old.restricted)
        new = ApiKey.objects.create(
            merchant=merchant,
            key_hash=hash_api_key(raw),
            prefix=raw[:12],
            live=old.live,
            name=old.name,
            restricted=old.restricted,
            scopes=old.scopes,
            rate_limit_per_second=old.rate_limit_per_second,
            rate_limit_burst=old.rate_limit_burst,
        )
        now = timezone.now()
        old.expires_at = now + timedelta(seconds=expires_in)
        if expires_in == 0:
            old.revoked_at = now
        old.save(update_fields=["expires_at", "revoked_at"])
    return new, raw


def api_key_revoke(*, merchant: Merchant, caller: ApiKey | None, key_id: str) -> ApiKey:
    """Revoke a key at once (the key asking may revoke itself)."""
    with transaction.atomic():
        key = _key_locked(merchant=merchant, caller=caller, key_id=key_id)
        _within(caller, restricted=key.restricted, scopes=key.scopes)
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def merchant_create(*, name: str, gateways: list[str] | None = None) -> tuple[Merchant, str]:
    """Create a merchant with one test API key; returns the merchant and the raw key."""
    merchant = Merchant.objects.create(
        name=name, gateways=list(gateways if gateways is not None else ["sandbox_a", "sandbox_b"])
    )
    _key, raw = api_key_create(merchant=merchant)
    return merchant, raw
