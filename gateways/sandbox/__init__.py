"""The sandbox gateway: a simulated remote card gateway driven by test tokens.

``tokens.py`` holds the test tokens and the codes the sandbox answers with, ``adapter.py`` the
adapter (``SandboxGateway``), ``ledger.py`` read-only views of its ledger for tests and
benchmarks.

It behaves like a real gateway that many processes talk to at once: its ledger and request log
are rows in PostgreSQL (``gateways.models``), every call is idempotent by its reference, and a
reference raced by several processes still yields exactly one ledger row (unique constraint plus
``INSERT ... ON CONFLICT DO NOTHING``, the raced call reading the winner's row). Each call runs
in its own short transaction; call it outside any transaction of your own (as every gateway
call should be), or the ledger rows roll back with yours.

Token behaviour:

* ``tok_visa``, ``tok_mastercard``: approved.
* ``tok_chargeDeclined``: declined, ``card_declined``; ``tok_insufficientFunds``: declined,
  ``insufficient_funds``; any other token: declined, ``invalid_token``.
* ``tok_processingError``: ``RETRYABLE_ERROR`` (``processing_error``) on the first two authorize
  calls for an ``order_reference``, approved from the third on. Calls are counted per order
  across every reference and across every sandbox account, so "the first two attempts of the
  payment" fail wherever the orchestrator sends them.
* ``tok_timeout``: on the first authorize call for an ``order_reference`` the charge is taken
  (a ledger row is written) but the answer is lost: the outcome is ``UNKNOWN``. ``lookup`` of that
  reference then finds the charge, and authorizing the same reference again returns it without
  charging again. Later calls with a *new* reference are approved as new charges, as a real
  gateway would: that is a double charge, which the orchestrator must avoid.

Chaos (``gateways/chaos.py``): when faults are switched on for an account, its added latency is
slept on every call, and the *first* authorize, capture, void or refund call with a reference
that the sandbox would otherwise approve may meet a fault chosen by ``chaos.decide``:
``error`` answers ``RETRYABLE_ERROR`` ``gateway_error`` and takes nothing; ``timeout`` takes the
operation (a ledger row) and answers ``UNKNOWN`` ``gateway_timeout``, exactly like
``tok_timeout``. Calls that repeat a reference, and lookups, are never faulted, so a resend or a
lookup finds what was taken. Test tokens keep their own behaviour.
"""
