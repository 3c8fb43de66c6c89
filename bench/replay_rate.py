"""Replay rate: ``replay_events``' core over one million events, and its memory.

    .venv/bin/python -m embedded bench replay_rate
    .venv/bin/python bench/replay_rate.py --batch-size 2000     # with DATABASE_URL set

It uses a database of its own (``aegispay_bench_replay`` on the configured PostgreSQL). The
first run loads 200,000 payments with five events each (1,000,000 events) in four SQL
``INSERT ... SELECT generate_series`` statements, consistent with each other: every payment
row is exactly what its events replay to, and four lifecycles are mixed (completed; declined
after a fallback; cancelled by a void). The outbox rows count as pruned: every event is recorded
as applied by the read models (``ReadModelAppliedEvent``), which are then built once with
``read_models_rebuild``. Later runs reuse the data when it is complete.

Then ``payments.projections.verify.events_replay`` (what ``manage.py replay_events`` runs)
replays and compares everything; the script prints events, seconds, events/s and the peak RSS every
100,000 events and at the end, so a flat peak shows that memory does not grow with the
events. It exits non-zero if the replay found differences (the loaded data is consistent).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import benchdb

PAYMENTS = 200_000
EVENTS_PER_PAYMENT = 5
EVENTS = PAYMENTS * EVENTS_PER_PAYMENT
MERCHANTS = 20

# g = 1..PAYMENTS. kind = g % 4: 0, 1 completed; 2 declined after a fallback; 3 cancelled.
_PAYMENT_COLUMNS = """
    id, merchant_id, status, amount, currency, capture_method, amount_authorized,
    amount_captured, amount_refunded, payment_method, customer, description,
    merchant_reference, metadata, gateway, gateway_reference, failure_code, failure_message,
    authorization_expires_at, version, created_at, updated_at
"""
_BASE = f"""
SELECT g,
       'pay_bench_' || lpad(g::text, 10, '0') AS id,
       'mer_bench_' || lpad((g % {MERCHANTS})::text, 2, '0') AS merchant_id,
       g % 4 AS kind,
       100 + g % 9900 AS amount,
       (ARRAY['USD', 'EUR', 'GBP'])[1 + g % 3] AS currency,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '10 seconds' AS created_at
FROM generate_series(1, {PAYMENTS}) AS g
"""  # noqa: S608 - constants only, no input
_LOAD_PAYMENTS = f"""
INSERT INTO payments_payment ({_PAYMENT_COLUMNS})
SELECT b.id, b.merchant_id,
       CASE b.kind WHEN 2 THEN 'failed' WHEN 3 THEN 'cancelled' ELSE 'completed' END,
       b.amount, b.currency, 'automatic',
       CASE b.kind WHEN 2 THEN 0 ELSE b.amount END,
       CASE WHEN b.kind < 2 THEN b.amount ELSE 0 END,
       0,
       CASE b.kind WHEN 2 THEN '{{"type": "card", "token": "tok_visa"}}'::jsonb
            ELSE '{{"type": "card", "token": "tok_visa", "brand": "visa", "last4": "4242"}}'::jsonb
       END,
       '{{}}'::jsonb, '', 'bench-' || b.g, '{{}}'::jsonb,
       CASE b.kind WHEN 2 THEN 'sandbox_b' ELSE 'sandbox_a' END,
       CASE b.kind WHEN 2 THEN '' ELSE 'ref_' || b.g END,
       CASE b.kind WHEN 2 THEN 'card_declined' ELSE '' END,
       CASE b.kind WHEN 2 THEN 'declined' ELSE '' END,
       CASE b.kind WHEN 2 THEN NULL ELSE b.created_at + interval '7 days' END,
       {EVENTS_PER_PAYMENT}, b.created_at, b.created_at + interval '5 seconds'
FROM ({_BASE}) AS b
"""  # noqa: S608 - constants only, no input
# One row per (payment, sequence): type, from, to and the changes of that step.
_LOAD_EVENTS = f"""
INSERT INTO payments_paymentevent (
    id, payment_id, sequence, type, from_status, to_status, data, actor, correlation_id,
    created_at)
SELECT 'evt_bench_' || lpad(b.g::text, 10, '0') || '_' || s.seq,
       b.id, s.seq, step.type, step.from_status, step.to_status,
       jsonb_build_object('changes', step.changes), 'system', 'cor_bench_' || b.g,
       b.created_at + s.seq * interval '1 second'
FROM ({_BASE}) AS b
CROSS JOIN generate_series(1, {EVENTS_PER_PAYMENT}) AS s(seq)
CROSS JOIN LATERAL (
    SELECT
        to_char((b.created_at + interval '7 days') AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expires,
        jsonb_build_object(
            'amount', b.amount, 'currency', b.currency, 'capture_method', 'automatic',
            'amount_authorized', 0, 'amount_captured', 0, 'amount_refunded', 0,
            'payment_method', '{{"type": "card", "token": "tok_visa"}}'::jsonb,
            'customer', '{{}}'::jsonb, 'description', '', 'merchant_reference', 'bench-' || b.g,
            'metadata', '{{}}'::jsonb, 'gateway', '', 'gateway_reference', '',
            'failure_code', '', 'failure_message', '', 'authorization_expires_at', NULL
        ) AS initial
) AS v
CROSS JOIN LATERAL (
    SELECT * FROM (VALUES
        -- kind 0 and 1: completed
        (0, 1, 'payment.initiated', '', 'initiated', v.initial),
        (0, 2, 'payment.processing', 'initiated', 'processing',
            '{{"gateway": "sandbox_a"}}'::jsonb),
        (0, 3, 'payment.authorized', 'processing', 'authorized',
            jsonb_build_object('amount_authorized', b.amount, 'gateway', 'sandbox_a',
                'gateway_reference', 'ref_' || b.g,
                'payment_method', '{{"type": "card", "token": "tok_visa", "brand": "visa",
                                    "last4": "4242"}}'::jsonb,
                'authorization_expires_at', v.expires)),
        (0, 4, 'payment.captured', 'authorized', 'captured',
            jsonb_build_object('amount_captured', b.amount)),
        (0, 5, 'payment.completed', 'captured', 'completed', '{{}}'::jsonb),
        -- kind 2: an attempt that erred, a fallback, a decline
        (2, 1, 'payment.initiated', '', 'initiated', v.initial),
        (2, 2, 'payment.processing', 'initiated', 'processing',
            '{{"gateway": "sandbox_a"}}'::jsonb),
        (2, 3, 'payment.attempt_failed', 'processing', 'processing', '{{}}'::jsonb),
        (2, 4, 'payment.processing', 'processing', 'processing',
            '{{"gateway": "sandbox_b"}}'::jsonb),
        (2, 5, 'payment.failed', 'processing', 'failed',
            '{{"failure_code": "card_declined", "failure_message": "declined"}}'::jsonb),
        -- kind 3: authorised, then voided
        (3, 1, 'payment.initiated', '', 'initiated', v.initial),
        (3, 2, 'payment.processing', 'initiated', 'processing',
            '{{"gateway": "sandbox_a"}}'::jsonb),
        (3, 3, 'payment.authorized', 'processing', 'authorized',
            jsonb_build_object('amount_authorized', b.amount, 'gateway', 'sandbox_a',
                'gateway_reference', 'ref_' || b.g,
                'payment_method', '{{"type": "card", "token": "tok_visa", "brand": "visa",
                                    "last4": "4242"}}'::jsonb,
                'authorization_expires_at', v.expires)),
        (3, 4, 'payment.cancel_requested', 'authorized', 'authorized', '{{}}'::jsonb),
        (3, 5, 'payment.cancelled', 'authorized', 'cancelled', '{{}}'::jsonb)
    ) AS t(kind, seq, type, from_status, to_status, changes)
    WHERE t.kind = CASE WHEN b.kind < 2 THEN 0 ELSE b.kind END AND t.seq = s.seq
) AS step
"""  # noqa: S608 - constants only, no input


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loaded() -> bool:
    from payments.models import (
        MerchantDailySummary,
        PaymentAuditEntry,
        PaymentEvent,
        ReadModelAppliedEvent,
    )

    return (
        PaymentEvent.objects.filter(id__startswith="evt_bench_").count() == EVENTS
        and ReadModelAppliedEvent.objects.count() == EVENTS
        and PaymentAuditEntry.objects.count() == EVENTS
        and MerchantDailySummary.objects.exists()
    )


def load() -> None:
    """Empty the bench database and load the payments, events and read models."""
    import pgtrigger
    from django.db import connection, transaction

    from payments.projections.read_models import read_models_rebuild

    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        with pgtrigger.ignore("payments.PaymentEvent:no_truncate"):
            # (only here: the ignore adds a parameter, so '%' elsewhere would need escaping)
            cursor.execute(
                "TRUNCATE payments_paymentevent, payments_paymentattempt, payments_refund, "
                "payments_idempotencykey, payments_payment, payments_apikey, "
                "payments_merchant, payments_merchantdailysummary, "
                "payments_paymentauditentry, payments_readmodelappliedevent, "
                "outbox_outboxmessage CASCADE"
            )
        cursor.execute(
            "INSERT INTO payments_merchant (id, name, gateways, created_at) "  # noqa: S608 - constants only
            "SELECT 'mer_bench_' || lpad(m::text, 2, '0'), 'Bench merchant ' || m, "
            '\'["sandbox_a", "sandbox_b"]\'::jsonb, now() '
            f"FROM generate_series(0, {MERCHANTS - 1}) AS m"
        )
        cursor.execute(_LOAD_PAYMENTS)
        cursor.execute(_LOAD_EVENTS)
        cursor.execute(
            "INSERT INTO payments_readmodelappliedevent (event_id, applied_at) "
            "SELECT id, now() FROM payments_paymentevent"
        )
    print(f"loaded {PAYMENTS} payments, {EVENTS} events in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE payments_payment; ANALYZE payments_paymentevent")
    rebuilt = read_models_rebuild(chunk_size=10_000)
    print(
        f"built the read models ({rebuilt.audit_rows} audit rows, {rebuilt.summary_rows} "
        f"summary rows) in {time.monotonic() - started:.1f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--reload", action="store_true", help="load the data again")
    args = parser.parse_args()

    benchdb.setup("aegispay_bench_replay")
    from payments.projections.verify import ReplayProgress, events_replay

    if args.reload or not loaded():
        load()
    else:
        print(f"reusing the loaded {PAYMENTS} payments and {EVENTS} events")
    print(f"peak RSS before the replay: {peak_rss_mib():.1f} MiB")

    def progress(at: ReplayProgress) -> None:
        print(
            f"  {at.events:>9} events  {at.seconds:7.1f}s  {at.rate:8.0f} events/s  "
            f"peak RSS {peak_rss_mib():.1f} MiB",
            flush=True,
        )

    report = events_replay(batch_size=args.batch_size, on_progress=progress)
    print(
        f"replay_events core: {report.events} events of {report.payments} payments in "
        f"{report.seconds:.1f}s = {report.rate:.0f} events/s; peak RSS {peak_rss_mib():.1f} MiB; "
        f"{report.differences} differences"
    )
    return 1 if report.differences else 0


if __name__ == "__main__":
    sys.exit(main())
