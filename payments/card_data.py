"""The card-number filter: no request body may carry a raw card number, wherever it sits.

Not a shape, so not a serializer: it scans the raw text of the body before anything parses it.
"""

from __future__ import annotations

import re

from .errors import CardDataNotAllowed

# 13 to 19 digits, optionally separated by single spaces or dashes, not inside a longer number.
_CARD_CANDIDATE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


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


def reject_card_numbers(raw_body: str) -> None:
    """Refuse a body that holds anything shaped like a card number (13 to 19 digits, Luhn-valid).

    Scans the raw text, so keys, values, numbers and nested objects are all covered.
    """
    for match in _CARD_CANDIDATE.finditer(raw_body):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            raise CardDataNotAllowed(
                "raw card numbers are not accepted; send a gateway token in payment_method.token"
            )
