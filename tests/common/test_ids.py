"""Prefixed, time-ordered ids (common/ids.py)."""

from __future__ import annotations

import re
import time

from common.ids import new_id


def test_an_id_is_its_prefix_and_26_crockford_base32_characters() -> None:
    ids = {new_id("pay") for _ in range(200)}

    assert len(ids) == 200
    assert all(re.fullmatch(r"pay_[0-9abcdefghjkmnpqrstvwxyz]{26}", value) for value in ids)


def test_ids_made_later_sort_after_earlier_ones() -> None:
    made = []
    for _ in range(5):
        made.append(new_id("evt"))
        time.sleep(0.002)  # ids of the same millisecond sort randomly among themselves

    assert sorted(made) == made
