"""Router decision time with 10 gateway configurations, for every strategy.

    .venv/bin/python -m embedded bench router_latency
    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/router_latency.py --decisions 5000

It uses its own database (``aegispay_bench_router`` on the configured PostgreSQL, or
``BENCH_DATABASE_NAME``), created and migrated when missing; it creates 10 ``GatewayConfig`` rows
(``bench_gw_0`` .. ``bench_gw_9``) and registers a ``SandboxGateway`` for each, feeds their
live metrics in a Redis namespace of its own, then for each strategy warms up and times
``--decisions`` calls of ``routing.router.route`` (10 gateways; live breaker and bulkhead
checks, live metrics, scoring and the strategy; the configuration cache on, as in
production) and prints p50 and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid

import benchdb

GATEWAYS = [f"bench_gw_{i}" for i in range(10)]
STRATEGIES = ("score", "priority", "split", "rules", "success_rate")


def percentile(ordered: list[float], pct: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    benchdb.setup("aegispay_bench_router")
    from django.conf import settings

    from gateways.breaker import breaker_for
    from gateways.bulkhead import bulkhead_for
    from gateways.registry import register
    from gateways.sandbox.adapter import SandboxGateway
    from routing.metrics import record_outcome, segment_for
    from routing.models import GatewayConfig, MerchantRouting
    from routing.router import route
    from routing.selectors import clear_cache
    from routing.types import PaymentFacts

    settings.ROUTING_METRICS_PREFIX = f"aegispay:bench-router:{uuid.uuid4().hex}:"
    rng = random.Random(args.seed)
    for index, name in enumerate(GATEWAYS):
        GatewayConfig.objects.update_or_create(
            name=name,
            defaults={
                "adapter": "sandbox",
                "enabled": True,
                "currencies": ["USD", "EUR", "GBP"],
                "methods": ["card"],
                "countries": [],
                "min_amount": 50,
                "max_amount": 10_000_000,
                "fee_fixed": 20 + index,
                "fee_bps": 200 + 10 * index,
                "priority": index,
            },
        )
        register(SandboxGateway(name))
        breaker_for(name).reset()
        bulkhead_for(name).reset()
    share = 100 / len(GATEWAYS)
    policies = {
        "score": {},
        "priority": {},
        "split": {"split": dict.fromkeys(GATEWAYS, share)},
        "rules": {
            "rules": [
                {"if": {"currency": "EUR", "amount_gte": 100_000}, "gateway": GATEWAYS[3]},
                {"if": {"metadata": {"tier": "gold"}}, "gateway": GATEWAYS[5]},
                {"if": {"country": ["DE", "AT"]}, "gateway": GATEWAYS[7]},
            ]
        },
        "success_rate": {},
    }
    for strategy, extra in policies.items():
        MerchantRouting.objects.update_or_create(
            merchant_id=f"bench-{strategy}", defaults={"strategy": strategy, **extra}
        )
    clear_cache()

    def payment(i: int, strategy: str) -> PaymentFacts:
        return PaymentFacts(
            payment_id=f"pay_{i}",
            merchant_id=f"bench-{strategy}",
            amount=rng.choice((500, 2_500, 40_000, 250_000)),
            currency=rng.choice(("USD", "EUR")),
            method="card",
            country=rng.choice(("US", "DE", "FR")),
            metadata={"tier": rng.choice(("gold", "basic"))},
        )

    # Realistic metrics: every gateway has a history, with its own approval rate and latency.
    for index, name in enumerate(GATEWAYS):
        for i in range(200):
            facts = payment(i, "score")
            outcome = "approved" if rng.random() < 0.6 + 0.035 * index else "declined"
            record_outcome(
                gateway=name,
                outcome=outcome,
                latency_ms=rng.randint(50, 150 + 50 * index),
                segment=segment_for(facts),
            )

    print(f"router decision time, {len(GATEWAYS)} gateways, {args.decisions} decisions each")
    print(f"{'strategy':<14}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}")
    for strategy in STRATEGIES:
        for i in range(args.warmup):
            route(facts=payment(i, strategy), merchant_gateways=GATEWAYS)
        times = []
        for i in range(args.decisions):
            facts = payment(i, strategy)
            started = time.perf_counter_ns()
            decision = route(facts=facts, merchant_gateways=GATEWAYS)
            times.append((time.perf_counter_ns() - started) / 1000)
            assert decision.gateways, decision.as_dict()  # noqa: S101 - the bench must route
        times.sort()
        print(
            f"{strategy:<14}{percentile(times, 50):>10.0f}{percentile(times, 99):>10.0f}"
            f"{statistics.fmean(times):>10.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
