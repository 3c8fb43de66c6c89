"""Prefixed, time-ordered object ids (``pay_…``, ``evt_…``, ``we_…``), shared by every app.

The part after the prefix is 48 bits of milliseconds since the epoch followed by 80 random
bits, in Crockford base32: ids sort by creation time, so "newest first" is "id descending"
and cursor pagination needs no second column. Ids made in the same millisecond sort
randomly among themselves, which is still a strict total order. It lives in ``common``, which
imports nothing of the apps, so ``outbox`` can use it without importing ``payments``.
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


def id_floor(prefix: str, millis: int) -> str:
    """The smallest id ``new_id(prefix)`` can make at ``millis`` (ms since the epoch): every id
    made at or after that millisecond sorts at or after it, every one made before sorts before.
    Range partitions on an id column use it as their bounds (common/partitions.py)."""
    return f"{prefix}_{_encode(millis << 80, 26)}"


def id_millis(value: str) -> int:
    """The millisecond ``new_id`` made ``value`` at: its first 10 characters after the prefix
    hold the top 50 of the 130 bits, whose first two are zero."""
    number = 0
    for char in value.split("_", 1)[1][:10]:
        number = number * 32 + _ALPHABET.index(char)
    return number
