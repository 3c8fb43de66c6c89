"""The back office's payment list with a million payments: how long each page takes.

    make admin-bench
    .venv/bin/python bench/admin_list.py --payments 1000000 --repeat 15   # with DATABASE_URL

It uses a database of its own (``aegispay_bench_admin``). The first run loads ``--payments``
payments (default one million) with one SQL ``INSERT ... SELECT generate_series``: 1,000
merchants, every status, four currencies, two gateways, a customer email each, created over
the last 90 days (one every 7.776 s); it then ANALYZEs. Later runs reuse the rows when the
count matches.

Then a superuser's Django test client (the whole request: middleware, session, admin, ORM,
templates, on the real PostgreSQL) opens the payment list as staff do: the first page, the
next pages, each filter (status, merchant, gateway, currency, date), each kind of search
(payment id, merchant reference, gateway reference, customer email), ``--repeat`` times each,
and prints p50, p95 and max per page, with the number of SQL queries the page ran. It exits
non-zero when a p50 is at or above ``--budget-ms`` (300).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import benchdb

MERCHANTS = 1000

LOAD_SQL = """
INSERT INTO payments_payment (
    id, merchant_id, status, amount, currency, capture_method, amount_authorized,
    amount_captured, amount_refunded, payment_method, customer, description,
    merchant_reference, metadata, gateway, gateway_reference, failure_code, failure_message,
    authorization_expires_at, version, created_at, updated_at)
SELECT 'pay_adm_' || lpad(g::text, 10, '0'),
       'mer_adm_' || lpad((g %% %(merchants)s)::text, 4, '0'),
       (ARRAY['completed', 'completed', 'completed', 'failed', 'authorized', 'cancelled',
              'partially_refunded', 'refunded', 'processing', 'expired'])[1 + g %% 10],
       100 + g %% 99000,
       (ARRAY['USD', 'EUR', 'GBP', 'JPY'])[1 + g %% 4],
       'automatic', 0, 0, 0,
       '{"type": "card", "token": "tok_visa"}',
       jsonb_build_object('email', 'customer' || g || '@example.com', 'country', 'US'),
       '', 'order-' || g, '{}',
       (ARRAY['sandbox_a', 'sandbox_b'])[1 + g %% 2],
       'ch_adm_' || g, '', '', NULL, 1,
       now() - g * interval '7776 milliseconds',
       now() - g * interval '7776 milliseconds'
FROM generate_series(1, %(payments)s) AS g
"""


def load(payments: int) -> None:
    from django.db import connection

    from payments.models import Merchant, Payment

    if Payment.objects.count() == payments:
        print(f"reusing the loaded {payments} payments")
        return
    started = time.monotonic()
    benchdb.empty_tables()
    Merchant.objects.bulk_create(
        Merchant(id=f"mer_adm_{i:04d}", name=f"Merchant {i}", gateways=["sandbox_a"])
        for i in range(MERCHANTS)
    )
    with connection.cursor() as cursor:
        cursor.execute(LOAD_SQL, {"payments": payments, "merchants": MERCHANTS})
        cursor.execute("ANALYZE payments_payment")
    print(f"loaded {payments} payments in {time.monotonic() - started:.1f}s")


def pages(payments: int) -> dict[str, str]:
    """The list pages staff open, by name: path and query string."""
    base = "/admin/payments/payment/"
    probe = payments // 3
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400 * 30))
    return {
        "first page": base,
        "page 2": f"{base}?p=2",
        "page 50": f"{base}?p=50",
        "status=failed": f"{base}?status__exact=failed",
        "merchant": f"{base}?merchant__id__exact=mer_adm_0042",
        "gateway=sandbox_b": f"{base}?gateway__exact=sandbox_b",
        "currency=JPY": f"{base}?currency__exact=JPY",
        "created, a day": (
            f"{base}?created_at__gte={day}T00:00:00%2B00:00&created_at__lt={day}T23:59:59%2B00:00"
        ),
        "status+currency": f"{base}?status__exact=refunded&currency__exact=EUR",
        "search id": f"{base}?q=pay_adm_{probe:010d}",
        "search reference": f"{base}?q=order-{probe}",
        "search gateway ref": f"{base}?q=ch_adm_{probe}",
        "search email": f"{base}?q=customer{probe}@example.com",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--budget-ms", type=float, default=300.0)
    args = parser.parse_args()
    benchdb.setup("aegispay_bench_admin")

    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    setup_test_environment()  # lets the client see the rendered context (rows per page)
    load(args.payments)
    user_model = get_user_model()
    user_model.objects.filter(username="bench-admin").delete()
    admin = user_model.objects.create_superuser("bench-admin", "bench@example.com", "x")
    client = Client()
    client.force_login(admin)

    print(f"payment list, {args.payments:,} payments, {args.repeat} requests each")
    print(f"{'page':<22}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'queries':>9}  rows")
    worst = 0.0
    ok = True
    for name, url in pages(args.payments).items():
        client.get(url)  # warm: templates, plans, caches
        times = []
        queries = 0
        rows = 0
        for _ in range(args.repeat):
            reset_queries()
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                print(f"{name}: HTTP {response.status_code}")
                ok = False
                break
            queries = len(captured)
            rows = len(response.context["cl"].result_list)
        if not times:
            continue
        times.sort()
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        worst = max(worst, p50)
        print(f"{name:<22}{p50:>9.1f}{p95:>9.1f}{times[-1]:>9.1f}{queries:>9}  {rows}")
    ok = ok and worst < args.budget_ms
    print(f"slowest p50 {worst:.1f} ms; budget {args.budget_ms:.0f} ms")
    print("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
