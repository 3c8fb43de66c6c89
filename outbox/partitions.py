"""How the outbox is partitioned (common/partitions.py): the rows and their consumer marks by
UTC day of the row's ``created_at``, made ahead by beat and dropped past retention
(``outbox/relay.py``, ``outbox_prune``)."""

from __future__ import annotations

from common.partitions import Partitioned

OUTBOX = Partitioned(
    members=(
        ("outbox_outboxmessage", "created_at"),
        ("outbox_outboxconsumermark", "message_created_at"),
    ),
    interval="day",
)
