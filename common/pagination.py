"""Cursor pagination over time-ordered ids (``common/ids.py``), newest first.

Ids sort by creation time, so the cursor is the id itself and no second column is needed:
``starting_after`` pages to older rows, ``ending_before`` to newer ones. Callers validate the
cursors (an id of the right shape, not both at once) with their own error codes; this only
pages.
"""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


def cursor_page(
    qs: QuerySet[M],
    *,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[M], bool]:
    """One page of ``qs``, newest (highest id) first, and whether more rows lie beyond it in
    the direction of travel: older ones after ``starting_after`` (or from the newest when no
    cursor is given), newer ones before ``ending_before``. One query, of ``limit + 1`` rows."""
    if ending_before:
        rows = list(qs.filter(pk__gt=ending_before).order_by("pk")[: limit + 1])
        return list(reversed(rows[:limit])), len(rows) > limit
    if starting_after:
        qs = qs.filter(pk__lt=starting_after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    return rows[:limit], len(rows) > limit
