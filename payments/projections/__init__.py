"""Everything AegisPay derives from the event table, and can therefore rebuild from it.

- ``fold.py``: the one fold, a payment's events in sequence order giving its state and its
  place in the merchant daily summary; every projection below reads it.
- ``payment.py``: the payment row as a projection of its events (replay, snapshot, compare).
- ``read_models.py``: the read models, the merchant daily summary and the audit trail, fed by
  their outbox consumer and rebuildable; they record what they applied in their own table.
- ``verify.py``: ``replay_events``, which replays the events, compares every projection with
  what is stored, and repairs it.
"""
