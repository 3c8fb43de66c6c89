"""Routing simulation: three sandbox gateways, the best one degrades part way through.

    .venv/bin/python -m embedded bench routing_simulation [--payments 3000]

Three sandbox gateway accounts with different approval rates, latencies and costs take the
same sequence of payments once per strategy (``priority``, ``score``, ``success_rate``). A third
of the way in, the best gateway's approval rate collapses. Each payment goes to the router's
first choice; the sandbox decides approval (seeded decline injection, the same fate for the
same payment on the same gateway in every strategy's run) and the outcome feeds the live
metrics, as a worker does after every attempt. Latency is accounted, not slept (each gateway
reports its configured latency), so the run takes seconds.

It prints, per strategy, the traffic share and approval rate per gateway for each tenth of the
run, the overall approval rate, and how many payments after the degradation the degraded
gateway's share of the last 100 payments took to fall below a third of what it was. It exits
non-zero unless the adaptive strategy moved traffic away within ``--bound`` payments and
approved more than the fixed priority list on the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
from collections import deque
from dataclasses import dataclass

import benchdb

# A short metrics window, so that "recent" means the last few seconds of this fast run.
os.environ.setdefault("ROUTING_WINDOW_SECONDS", "3")


@dataclass(frozen=True)
class SimGateway:
    name: str
    approval: float  # before the degradation
    latency_ms: int
    fee_fixed: int
    fee_bps: int
    priority: int


GATEWAYS = (
    SimGateway("sim_best", approval=0.92, latency_ms=180, fee_fixed=30, fee_bps=200, priority=1),
    SimGateway("sim_cheap", approval=0.82, latency_ms=250, fee_fixed=10, fee_bps=120, priority=2),
    SimGateway("sim_fast", approval=0.86, latency_ms=90, fee_fixed=25, fee_bps=250, priority=3),
)
DEGRADED = "sim_best"
DEGRADED_APPROVAL = 0.35
STRATEGIES = ("priority", "score", "success_rate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=3000)
    parser.add_argument("--degrade-at", type=float, default=1 / 3, help="share of the run")
    parser.add_argument("--bound", type=int, default=500, help="payments allowed to move away")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    benchdb.setup("aegispay_bench_routing")
    from django.db import connection

    from gateways.base import ChargeRequest
    from gateways.breaker import breaker_for
    from gateways.bulkhead import bulkhead_for
    from gateways.chaos import ChaosConfig, clear_chaos, set_chaos
    from gateways.registry import register
    from gateways.sandbox.adapter import SandboxGateway
    from routing.metrics import record_result, reset_metrics
    from routing.models import GatewayConfig
    from routing.router import route
    from routing.types import PaymentFacts, RoutingPolicy

    for spec in GATEWAYS:
        register(SandboxGateway(spec.name, latency_ms=0))
        GatewayConfig.objects.update_or_create(
            name=spec.name,
            defaults={
                "enabled": True,
                "methods": ["card"],
                "fee_fixed": spec.fee_fixed,
                "fee_bps": spec.fee_bps,
                "priority": spec.priority,
            },
        )
    names = [g.name for g in GATEWAYS]
    by_name = {g.name: g for g in GATEWAYS}
    degrade_at = int(args.payments * args.degrade_at)
    window = max(1, args.payments // 10)

    def set_approvals(degraded: bool) -> None:
        for index, spec in enumerate(GATEWAYS):
            approval = DEGRADED_APPROVAL if degraded and spec.name == DEGRADED else spec.approval
            set_chaos(spec.name, ChaosConfig(decline_rate=1 - approval, seed=args.seed + index))

    summary = {}
    for strategy in STRATEGIES:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE gateways_sandboxledgerentry, gateways_sandboxrequest")
        for name in names:
            reset_metrics(name)
            breaker_for(name).reset()
            bulkhead_for(name).reset()
        set_approvals(degraded=False)
        rng = random.Random(args.seed)
        policy = RoutingPolicy(strategy=strategy)
        chosen: list[str] = []
        approved: list[bool] = []
        for i in range(args.payments):
            if i == degrade_at:
                set_approvals(degraded=True)
            facts = PaymentFacts(
                payment_id=f"pay_sim{i:06d}",
                merchant_id="mer_sim",
                amount=2000 + (i % 7) * 500,
                currency="EUR",
                country="DE",
            )
            decision = route(facts=facts, merchant_gateways=names, policy=policy, rng=rng)
            gateway = decision.gateways[0]
            result = SandboxGateway(gateway, latency_ms=0).authorize(
                ChargeRequest(
                    reference=f"sim-{i}",
                    order_reference=facts.payment_id,
                    amount=facts.amount,
                    currency=facts.currency,
                    token="tok_visa",
                )
            )
            # Account the gateway's configured latency instead of sleeping it.
            result = dataclasses.replace(result, latency_ms=by_name[gateway].latency_ms)
            record_result(result, facts=facts)
            chosen.append(gateway)
            approved.append(result.succeeded)
        summary[strategy] = report(strategy, chosen, approved, names, degrade_at, window)
    clear_chaos()
    adaptive, fixed = summary["success_rate"], summary["priority"]
    ok = adaptive["moved_after"] is not None and adaptive["moved_after"] <= args.bound
    ok = ok and adaptive["approval"] > fixed["approval"]
    print()
    for strategy in STRATEGIES:
        s = summary[strategy]
        moved = "never" if s["moved_after"] is None else f"{s['moved_after']} payments"
        print(f"{strategy:>12}: approval {s['approval']:.1%}; moved off {DEGRADED} after {moved}")
    print("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def report(
    strategy: str,
    chosen: list[str],
    approved: list[bool],
    names: list[str],
    degrade_at: int,
    window: int,
) -> dict:
    print(f"\n== {strategy} ==  ({DEGRADED} degrades at payment {degrade_at})")
    header = "payments".ljust(14) + "".join(f"{n + ' share/appr':>26}" for n in names)
    print(header + "   overall")
    for start in range(0, len(chosen), window):
        part = range(start, min(start + window, len(chosen)))
        cells = []
        for name in names:
            mine = [i for i in part if chosen[i] == name]
            share = len(mine) / len(part)
            rate = sum(approved[i] for i in mine) / len(mine) if mine else float("nan")
            cells.append(f"{share:>14.0%} / {rate:>6.0%}   ")
        overall = sum(approved[i] for i in part) / len(part)
        label = f"{start}-{part[-1]}".ljust(14)
        print(label + "".join(f"{c:>26}" for c in cells) + f"   {overall:.0%}")
    before = chosen[max(0, degrade_at - 100) : degrade_at]
    share_before = before.count(DEGRADED) / max(1, len(before))
    recent: deque[str] = deque(chosen[max(0, degrade_at - 100) : degrade_at], maxlen=100)
    moved_after = None
    for offset, name in enumerate(chosen[degrade_at:], start=1):
        recent.append(name)
        if recent.count(DEGRADED) / len(recent) < share_before / 3:
            moved_after = offset
            break
    return {"approval": sum(approved) / len(approved), "moved_after": moved_after}


if __name__ == "__main__":
    sys.exit(main())
