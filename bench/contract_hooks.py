"""Schemathesis hooks for ``make schemathesis`` (``bench/contract.py`` loads them through
``SCHEMATHESIS_HOOKS``): the API key every generated request carries, and the rules of the API
that its OpenAPI 3.0 schema cannot state.

**The API key.** The contract lets a key revoke itself (``DELETE /v1/api_keys/{id}``) and end
itself by a roll with ``expires_in: 0``, and the fuzzer may do either with the very key it is
using (it lists the keys, ``GET /v1/api_keys``). A fixed ``Authorization`` header would then make
every later case a ``401`` and test nothing. So the key is made here, for the run's merchant
(``CONTRACT_MERCHANT_ID``), with the run's huge request budget: once at the start, and again
whenever a request that carried it is answered ``401`` (schemathesis' re-authentication then
replays that one request with the new key). Cases that send no key or a wrong one on purpose
(the ``ignored_auth`` check, negative security cases) are left as they are.

Made with the project's own ``api_key_create``, on the run's database: the API has no call that
makes a key without one.

**Rules the schema cannot state**, and the generated requests that break them, which
``filter_case`` drops (in every phase: the coverage phase applies only the case hooks):

* ``metadata`` keys are 1 to 40 characters (docs/API.md). JSON Schema says that with
  ``propertyNames``, which OpenAPI 3.0 lacks: the schema carries it as the extension
  ``x-property-names``, which schemathesis' 3.0 reader drops. (Served as OpenAPI 3.1, the schema
  could say it and this filter would go.)
* ``starting_after`` and ``ending_before`` are refused together (each one's description says
  so): a rule between two query parameters, which no OpenAPI version can state.
* A raw card number anywhere in a body is refused, ``400 card_data_not_allowed`` (docs/API.md),
  and so is one in the ``Idempotency-Key``, which is stored as sent: 13 to 19 digits that pass
  the Luhn check, however written (``payments/card_data.py``), which no schema pattern can
  say. The generator, drawing digits freely, sometimes writes one; the project's own
  ``holds_card_number`` decides, so exactly those requests are dropped.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import schemathesis
from schemathesis.generation.meta import TestPhase

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aegispay.settings")
django.setup()

from django.conf import settings  # noqa: E402 - after django.setup()
from django.db import close_old_connections  # noqa: E402

from payments.card_data import holds_card_number  # noqa: E402
from payments.merchants import api_key_create  # noqa: E402
from payments.models import ApiKey, Merchant  # noqa: E402

BUDGET = 1_000_000


def mint_api_key() -> str:
    """A new secret test key of the run's merchant, with a budget no run can spend."""
    close_old_connections()
    merchant = Merchant.objects.get(pk=os.environ["CONTRACT_MERCHANT_ID"])
    key, raw = api_key_create(merchant=merchant, name="schemathesis")
    ApiKey.objects.filter(pk=key.pk).update(rate_limit_per_second=BUDGET, rate_limit_burst=BUDGET)
    return raw


# Cached for the whole run (an hour is longer than any run); a 401 invalidates it.
@schemathesis.auth(refresh_interval=3600, retry_on=[401])
class MintedApiKey:
    def get(self, case: Any, ctx: Any) -> str:
        return mint_api_key()

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _metadata_keys_fit(body: Any) -> bool:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(metadata, dict):
        return True
    return all(1 <= len(key) <= settings.METADATA_MAX_KEY_LENGTH for key in metadata)


def _texts(value: Any) -> Iterator[str]:
    """Every string of decoded JSON, keys included, and its numbers as decimal text, as the
    API's parser checks them (``payments/parsers.py``)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _holds_card_number(case: Any) -> bool:
    headers = {name.lower(): value for name, value in (case.headers or {}).items()}
    texts = [*_texts(case.body), *_texts(headers.get("idempotency-key"))]
    return any(holds_card_number(text) for text in texts)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    query = case.query or {}
    both_cursors = bool(query.get("starting_after") and query.get("ending_before"))
    return _metadata_keys_fit(case.body) and not both_cursors and not _holds_card_number(case)


# --- an API-key create's Idempotency-Key, in the stateful phase ---
#
# A revoked key is not found (404 resource_missing: docs/API.md, revoked keys are neither listed
# nor revoked again), and a create replayed under its Idempotency-Key answers the key as it is
# now, revoked included (``Idempotent-Replayed: true``). The stateful phase draws short keys
# ("z") in scenario after scenario: a scenario whose create replays one an earlier scenario
# revoked links its answer to a DELETE that is rightly 404, which the check of created
# resources (ST302) reports as lost, since it looks for the DELETE in its own scenario only.
# A client reuses a key for one request, not across unrelated ones: in that phase each
# API-key create or roll gets a key of its own (its drawn key and a letters-only suffix, so
# the key stays within 255 printable characters and holds no new digits). The other phases
# keep the drawn keys, replays and ``idempotency_key_reused`` included.
_STATEFUL_CALLS = itertools.count(1)


def _letters(number: int) -> str:
    out = ""
    while number:
        number, digit = divmod(number - 1, 26)
        out = chr(ord("a") + digit) + out
    return out


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    meta = getattr(case, "meta", None)
    if meta is None or meta.phase.name != TestPhase.STATEFUL:
        return
    if case.method.upper() != "POST" or not case.path.startswith("/v1/api_keys"):
        return
    headers = dict(case.headers or {})
    for name, value in headers.items():
        if name.lower() == "idempotency-key" and isinstance(value, str):
            suffix = "~" + _letters(next(_STATEFUL_CALLS))
            headers[name] = value[: 255 - len(suffix)] + suffix
            case.headers = headers
            return
