"""Merchants and their API keys: creating them, and the stored form of a key."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction

from .models import ApiKey, Merchant


def hash_api_key(raw_key: str) -> str:
    """The stored form of a key. Keys carry 256 random bits, so a plain SHA-256 is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, merchant: Merchant, live: bool = False) -> tuple[ApiKey, str]:
    """Make a key for ``merchant``; returns the row and the raw key, which is never stored."""
    raw = f"sk_{'live' if live else 'test'}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        merchant=merchant, key_hash=hash_api_key(raw), prefix=raw[:12], live=live
    )
    return key, raw


@transaction.atomic
def merchant_create(*, name: str, gateways: list[str] | None = None) -> tuple[Merchant, str]:
    """Create a merchant with one test API key; returns the merchant and the raw key."""
    merchant = Merchant.objects.create(
        name=name, gateways=list(gateways if gateways is not None else ["sandbox_a", "sandbox_b"])
    )
    _key, raw = api_key_create(merchant=merchant)
    return merchant, raw
