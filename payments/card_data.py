"""The card-number filter: no text the API stores may hold a raw card number, however written.

Not a shape, so not a serializer: the merchant API's JSON parser (``payments/parsers.py``) runs
it on every string of every body, keys included, after JSON has decoded its escapes, and
``Idempotency-Key`` runs it on the header. Numbers are checked as their decimal text.

A card number here is 13 to 19 digits that pass the Luhn check, written:

* as any Unicode decimal digits (full-width, Arabic-Indic...), read as the digits they are;
* in one run, or in groups parted by up to three characters that are neither letters nor
  digits (spaces of any kind, tabs, newlines, ``-``, ``.``, ``/``, ``_``...), when the groups
  look like a card's: every group at least three digits long (``4242.4242.4242.4242``,
  ``3782 822463 10005``), or all of them parted by one and the same single character
  (``4 2 4 2 …``);
* anywhere in longer text, including glued to letters (``ref4242424242424242``).

Any run of consecutive groups is tried, so a card number beside other digits is still found.
Numbers such as ``2026-12-03 08:15:30.123`` (mixed separators, short groups) are not cards.
"""

from __future__ import annotations

import re

from .errors import CardDataNotAllowed

_MIN_DIGITS, _MAX_DIGITS = 13, 19
# Digit groups parted by at most three characters that are neither letters nor digits.
_SEPARATOR = r"[\W_]{1,3}"
_CHAIN = re.compile(rf"\d+(?:{_SEPARATOR}\d+)*")
_SPLIT = re.compile(rf"({_SEPARATOR})")
_MESSAGE = "raw card numbers are not accepted; send a gateway token in payment_method.token"


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _ascii(digits: str) -> str:
    """Unicode decimal digits as ASCII ones (``int`` reads every Unicode decimal digit)."""
    return digits if digits.isascii() else "".join(str(int(char)) for char in digits)


def _card_in_chain(chain: str) -> bool:
    parts = _SPLIT.split(chain)
    groups = [_ascii(group) for group in parts[::2]]
    separators = parts[1::2]
    for first in range(len(groups)):
        length = 0
        for last in range(first, len(groups)):
            length += len(groups[last])
            if length > _MAX_DIGITS:
                break
            if length < _MIN_DIGITS:
                continue
            inner = separators[first:last]
            shaped = (
                not inner
                or all(len(group) >= 3 for group in groups[first : last + 1])
                or (len(set(inner)) == 1 and len(inner[0]) == 1)
            )
            if shaped and luhn_valid("".join(groups[first : last + 1])):
                return True
    return False


def holds_card_number(text: str) -> bool:
    """Whether ``text`` holds anything shaped like a card number (see the module's docstring)."""
    return any(
        len(chain) >= _MIN_DIGITS and _card_in_chain(chain)
        for chain in (match.group() for match in _CHAIN.finditer(text))
    )


def reject_card_number(text: str, *, param: str | None = None) -> None:
    """Refuse ``text`` if it holds a card number. ``param`` names where it was, never what."""
    if holds_card_number(text):
        raise CardDataNotAllowed(_MESSAGE, param=param)
