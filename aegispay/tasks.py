"""Tasks of the project as a whole, over every app."""

from __future__ import annotations

from celery import shared_task

from common.partitions import ensure_partitions


@shared_task(name="aegispay.tasks.partitions_maintain")
def partitions_maintain() -> list[str]:
    """Make the partitioned tables' partitions ``PARTITIONS_AHEAD`` periods ahead and give
    every partition its table's statement triggers (beat; common/partitions.py). Returns the
    partitions it made."""
    return ensure_partitions()
