"""Cursor pagination over time-ordered ids (common/pagination.py), newest first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db.models import QuerySet

from common.pagination import cursor_page
from payments.models import Merchant


@pytest.fixture
def newest_first(db: None) -> list[str]:
    """Six merchants' ids, newest first; named in creation order, so a page that fell back
    to the model's ordering (by name) would come out oldest first."""
    ids = [Merchant.objects.create(name=f"m{n}").pk for n in range(6)]
    return sorted(ids, reverse=True)


def merchants(ids: list[str]) -> QuerySet[Merchant]:
    return Merchant.objects.filter(pk__in=ids)


def page_ids(qs: QuerySet[Merchant], **cursor: Any) -> tuple[list[str], bool]:
    rows, has_more = cursor_page(qs, **cursor)
    return [row.pk for row in rows], has_more


def test_without_a_cursor_the_newest_come_first(newest_first: list[str]) -> None:
    assert page_ids(merchants(newest_first), limit=4) == (newest_first[:4], True)


def test_starting_after_pages_to_older_rows_until_none_are_left(newest_first: list[str]) -> None:
    qs = merchants(newest_first)

    assert page_ids(qs, limit=2, starting_after=newest_first[1]) == (newest_first[2:4], True)
    assert page_ids(qs, limit=2, starting_after=newest_first[3]) == (newest_first[4:], False)
    assert page_ids(qs, limit=2, starting_after=newest_first[5]) == ([], False)


def test_ending_before_pages_to_newer_rows_still_newest_first(newest_first: list[str]) -> None:
    qs = merchants(newest_first)

    assert page_ids(qs, limit=2, ending_before=newest_first[4]) == (newest_first[2:4], True)
    assert page_ids(qs, limit=2, ending_before=newest_first[2]) == (newest_first[:2], False)
    assert page_ids(qs, limit=3, ending_before=newest_first[1]) == (newest_first[:1], False)


def test_a_page_that_takes_exactly_the_rest_has_no_more(newest_first: list[str]) -> None:
    qs = merchants(newest_first)

    assert page_ids(qs, limit=6) == (newest_first, False)
    assert page_ids(qs, limit=5) == (newest_first[:5], True)


def test_the_callers_filters_hold_on_every_page(newest_first: list[str]) -> None:
    qs = merchants(newest_first).exclude(pk=newest_first[2])

    assert page_ids(qs, limit=2, starting_after=newest_first[0]) == (
        [newest_first[1], newest_first[3]],
        True,
    )


def test_an_empty_cursor_is_no_cursor(newest_first: list[str]) -> None:
    qs = merchants(newest_first)

    assert page_ids(qs, limit=2, starting_after="", ending_before="") == (newest_first[:2], True)


@pytest.mark.parametrize("cursor", [{}, {"starting_after": "mer_0"}, {"ending_before": "mer_0"}])
def test_a_page_is_one_query(
    newest_first: list[str],
    django_assert_num_queries: Callable[..., Any],
    cursor: dict[str, str],
) -> None:
    with django_assert_num_queries(1):
        cursor_page(merchants(newest_first), limit=3, **cursor)
