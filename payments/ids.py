"""Prefixed, time-ordered object ids (``pay_…``, ``evt_…``).

The part after the prefix is 48 bits of milliseconds since the epoch followed by 80 random
bits, in Crockford base32: ids sort by creation time, so "newest first" is "id descending"
and cursor pagination needs no second column. Ids made in the same millisecond sort
randomly among themselves, which is still a strict total order.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_ALPHABET[index])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new id ``<prefix>_<26 characters>`` that sorts after every id made earlier."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | secrets.randbits(80)
    return f"{prefix}_{_encode(value, 26)}"


# Module-level defaults, so that migrations can refer to them by name.
def new_merchant_id() -> str:
    return new_id("mer")


def new_api_key_id() -> str:
    return new_id("key")


def new_payment_id() -> str:
    return new_id("pay")


def new_attempt_id() -> str:
    return new_id("att")


def new_refund_id() -> str:
    return new_id("re")


def new_event_id() -> str:
    return new_id("evt")
