"""The merchant API's JSON parser: a body is read only if every part of it can be stored.

DRF's ``JSONParser`` decodes the body; this parser then walks what it decoded, once, iteratively,
and refuses, before any view, serializer or Idempotency-Key sees the body:

* JSON nested deeper than ``MAX_DEPTH`` levels (the top-level object or array is level 1), and
  JSON so deep that the decoder itself gives up: ``400 json_too_deep``;
* a string or key holding NUL or an unpaired surrogate, which PostgreSQL cannot store and UTF-8
  cannot encode: ``400 parameter_invalid``;
* a string, key or number holding a card number (``payments/card_data.py``):
  ``400 card_data_not_allowed``.

``param`` names where the fault is (``metadata.order``, ``items[2]``); for a key at fault it
names the object holding it, so the answer never repeats what was refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

from rest_framework.parsers import JSONParser

from .card_data import reject_card_number
from .errors import ValidationFailed

MAX_DEPTH = 64

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_UNSTORABLE_MESSAGE = "text may not contain NUL characters or unpaired surrogates"


def unstorable(text: str) -> bool:
    """Whether ``text`` holds NUL or an unpaired surrogate."""
    return _UNSTORABLE.search(text) is not None


def text_invalid(param: str | None) -> ValidationFailed:
    return ValidationFailed("parameter_invalid", _UNSTORABLE_MESSAGE, param=param)


def _too_deep() -> ValidationFailed:
    return ValidationFailed("json_too_deep", f"JSON may be nested at most {MAX_DEPTH} levels deep")


def _check_text(text: str, param: str | None) -> None:
    if unstorable(text):
        raise text_invalid(param)
    reject_card_number(text, param=param)


def _child(param: str | None, name: str) -> str:
    return name if param is None else f"{param}.{name}"


def inspect_json(data: Any) -> None:
    """Refuse decoded JSON that is too deep or holds text that may not be stored."""
    stack: list[tuple[Any, int, str | None]] = [(data, 1, None)]
    while stack:
        value, depth, param = stack.pop()
        if isinstance(value, str):
            _check_text(value, param)
        elif isinstance(value, Mapping | list):
            if depth > MAX_DEPTH:
                raise _too_deep()
            if isinstance(value, Mapping):
                for key, item in value.items():
                    _check_text(key, param)
                    stack.append((item, depth + 1, _child(param, key)))
            else:
                for index, item in enumerate(value):
                    stack.append((item, depth + 1, f"{param or ''}[{index}]"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            reject_card_number(str(value), param=param)


class MerchantJSONParser(JSONParser):
    """``JSONParser``, then ``inspect_json`` on what it decoded."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        inspect_json(data)
        return data
