"""The payments app's id makers (``pay_…``, ``evt_…``), on ``common.ids.new_id``.

Module-level functions, so that migrations can refer to them by name.
"""

from __future__ import annotations

from common.ids import new_id


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
