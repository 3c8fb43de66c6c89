"""How the payments app's growing tables are partitioned (common/partitions.py).

- The event table by month of its payment's creation: its key is ``payment_id``, a
  time-ordered id, so a payment's events share one partition and ``(payment, sequence)`` stays
  unique over the table.
- The audit trail by month of its event's time (``created_at``).

Events and audit rows are kept for good: their partitions are made ahead by beat, never dropped.
"""

from __future__ import annotations

from common.partitions import Partitioned

EVENTS = Partitioned(
    members=(("payments_paymentevent", "payment_id"),), interval="month", id_prefix="pay"
)
AUDIT = Partitioned(members=(("payments_paymentauditentry", "created_at"),), interval="month")
