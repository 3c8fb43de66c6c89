"""make bench-scale: create latency and lifecycle throughput as the event table grows (issue 13,
"flat with size").

    make bench-scale                                   # 0, 1 M and 10 M events
    make bench-scale BENCH_ARGS="--sizes 0,1000000 --api-seconds 10"
    .venv/bin/python -m embedded bench scale --sizes 0,20000,100000 --api-rounds 1 \\
        --api-seconds 5 --lifecycle-payments 200
    .venv/bin/python -m embedded bench scale --sizes 1000000 --seed-only   # the seeding alone

**What it does.** One database of its own (``aegispay_bench_scale``), grown from size to size and
never seeded again from scratch: for each of ``--sizes`` (events, ascending) it copies in
payments until the event table holds at least that many events, vacuums and analyses, then runs
bench-api and bench-lifecycle on it (``bench/api.py`` and ``bench/lifecycle.py``, as child
processes, with ``--keep-data`` and the seeded bench merchant, whose payments are a third of all
with the default 10 merchants), with defaults sized for 2 cores (``--api-*``,
``--lifecycle-*``). At the end one table, a line per size: the events there when measured;
AegisPay's ``POST`` and ``GET /v1/payments`` req/s, p50 and p99 (medians over bench-api's
rounds) and its throughput ratio to the bare DRF reference (the median of the rounds' ratios);
the lifecycle's payments/s and its ``create -> authorized`` p50. ``--json PATH`` writes every
figure of both benches for each size. When the database holds more events than the first size,
it is emptied first (``--reuse``: it is measured as it is).

**Seeding.** PostgreSQL ``COPY ... FROM STDIN`` (psycopg 3's ``cursor.copy``) of rows generated
chunk by chunk, ``--chunk`` payments per transaction (the database is consistent at every
commit), by ``--jobs`` processes (one per CPU) each with a connection of its own; it prints the
rate in events/s. Payments are spread over the ``--days`` before now, oldest first, over
``--merchants`` merchants (one the benches' own, ``Scale bench``, the others with shares of 1/2,
1/3, ...). Each is what the system would hold for an automatic-capture card payment that
completed: the payment row (``completed``, version 5, its amounts), its five events
(``payment.initiated``, ``processing``, ``authorized``, ``captured``, ``completed``, sequence 1
to 5, with the ``changes`` that replay to the row: ``manage.py replay_events`` finds no
difference), its authorize and capture attempts, and what the read models would have applied:
one audit entry and one ``ReadModelAppliedEvent`` per event, and the merchant daily summary's
rows added to. Ids are ``common.ids``' format with the row's own ``created_at`` as their time.
No outbox rows: production prunes them once published and consumed.

The columns copied are the models' (and so the database's): each table's are the fields the
seeder generates by name plus every other concrete field with a default, filled with it;
a field with neither, or a NOT NULL column of the database without a default that no field
names, stops the seeding before it begins, saying which.

**What the benches leave.** bench-api deletes what it wrote (``--keep-data``); the lifecycle's
payments stay, completed, five events each, so the next size's count includes them.

The exit code is 1 when a bench failed at some size (the next sizes are still measured), 130
when interrupted (Ctrl-C, SIGTERM): the chunks being copied roll back, a bench stops its
servers.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import benchdb

REPO = Path(__file__).resolve().parent.parent
DATABASE = "aegispay_bench_scale"
BENCH_MERCHANT = "Scale bench"
OTHER_MERCHANT = "Scale merchant {}"
EVENTS_PER_PAYMENT = 5
DEFAULT_SIZES = "0,1000000,10000000"
PROGRESS_SECONDS = 10.0

# --- ids as common.ids makes them, from a given time ---

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Every pair of Crockford base32 characters, indexed by the 10 bits they stand for.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _id(prefix: str, millis: int, rng: random.Random) -> str:
    """``common.ids.new_id(prefix)`` as made at ``millis`` (ms since the epoch): 48 bits of
    time then 80 random, 26 characters. Two characters per lookup, where
    ``common.ids._encode`` divides for each: it counts at ten million events."""
    v = (millis << 80) | rng.getrandbits(80)
    p = _PAIRS
    return (
        f"{prefix}_{p[v >> 120]}{p[v >> 110 & 1023]}{p[v >> 100 & 1023]}{p[v >> 90 & 1023]}"
        f"{p[v >> 80 & 1023]}{p[v >> 70 & 1023]}{p[v >> 60 & 1023]}{p[v >> 50 & 1023]}"
        f"{p[v >> 40 & 1023]}{p[v >> 30 & 1023]}{p[v >> 20 & 1023]}{p[v >> 10 & 1023]}"
        f"{p[v & 1023]}"
    )


def _at(millis: int) -> datetime:
    """The time ``millis`` ms after the epoch, exactly (a float has sub-microsecond precision
    there, and ``fromtimestamp`` rounds to the microsecond), faster than adding a timedelta."""
    return datetime.fromtimestamp(millis / 1000, UTC)


# --- the tables and their columns, from the models ---


@dataclass(frozen=True)
class Table:
    """One table's COPY: the columns the seeder generates, in the order of its row tuples,
    then those filled with their field's default (``defaults``, appended to every row)."""

    name: str
    columns: tuple[str, ...]
    defaults: tuple[Any, ...]

    @property
    def copy_sql(self) -> str:
        return f"COPY {self.name} ({', '.join(self.columns)}) FROM STDIN"


def table_for(model: Any, generated: Sequence[str]) -> Table:
    """The COPY of ``model``'s table for rows of the ``generated`` columns (by column name).

    Every other concrete field of the model is filled with its default, left to the
    database's default (``db_default``) or, when nullable, left NULL; an auto-increment key is
    left to its sequence. Raises ``RuntimeError`` when a generated column is not the model's,
    or when a field, or a NOT NULL column only the database knows (added by SQL), would get
    no value: the seeder must be told about it, not copy rows the table refuses or that lie.
    """
    from django.db import connection

    table = model._meta.db_table
    fields = {f.column: f for f in model._meta.concrete_fields}
    unknown = [name for name in generated if name not in fields]
    if unknown:
        raise RuntimeError(f"{table}: the seeder generates {unknown}, not columns of the model")
    columns, defaults, missing = list(generated), [], []
    for column, f in fields.items():
        if column in generated or f.get_internal_type() in _AUTO_FIELDS:
            continue
        if f.has_default():
            columns.append(column)
            defaults.append(f.get_db_prep_save(f.get_default(), connection))
        elif not (f.has_db_default() or f.null):
            missing.append(column)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s AND is_nullable = 'NO' AND column_default "
            "IS NULL AND is_identity = 'NO' AND is_generated = 'NEVER'",
            [table],
        )
        missing += [name for (name,) in cursor.fetchall() if name not in fields]
    if missing:
        raise RuntimeError(
            f"{table}: no value for the required column(s) {', '.join(missing)}: "
            "teach bench/scale.py what a seeded row holds there"
        )
    return Table(table, tuple(columns), tuple(defaults))


_AUTO_FIELDS = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})

# What the seeder generates for each table, by column; the rest is the fields' defaults.
PAYMENT_COLUMNS = (
    "id",
    "merchant_id",
    "status",
    "amount",
    "currency",
    "amount_authorized",
    "amount_captured",
    "payment_method",
    "customer",
    "merchant_reference",
    "gateway",
    "gateway_reference",
    "authorization_expires_at",
    "version",
    "created_at",
    "updated_at",
    "progressed_at",
)
EVENT_COLUMNS = (
    "id",
    "payment_id",
    "sequence",
    "type",
    "from_status",
    "to_status",
    "data",
    "actor",
    "correlation_id",
    "created_at",
)
ATTEMPT_COLUMNS = (
    "id",
    "payment_id",
    "number",
    "operation",
    "gateway",
    "status",
    "amount",
    "currency",
    "gateway_reference",
    "latency_ms",
    "routing_decision",
    "created_at",
    "completed_at",
    "sends",
    "maybe_sent",
    "fence",
    "next_check_at",
)
APPLIED_COLUMNS = ("event_id", "applied_at")


@dataclass(frozen=True)
class Tables:
    """The COPY of each table seeded, checked against the models and the database."""

    payment: Table
    event: Table
    attempt: Table
    audit: Table
    applied: Table

    @classmethod
    def from_models(cls) -> Tables:
        from payments.models import (
            Payment,
            PaymentAttempt,
            PaymentAuditEntry,
            PaymentEvent,
            ReadModelAppliedEvent,
        )
        from payments.projections.read_models import AUDIT_FIELDS

        return cls(
            payment=table_for(Payment, PAYMENT_COLUMNS),
            event=table_for(PaymentEvent, EVENT_COLUMNS),
            attempt=table_for(PaymentAttempt, ATTEMPT_COLUMNS),
            audit=table_for(PaymentAuditEntry, ("event_id", *AUDIT_FIELDS)),
            applied=table_for(ReadModelAppliedEvent, APPLIED_COLUMNS),
        )

    def names(self) -> list[str]:
        return [t.name for t in (self.payment, self.event, self.attempt, self.audit, self.applied)]


def _prepare_tables(oldest: datetime) -> None:
    """Whatever the tables need before rows as old as ``oldest`` are copied in: all of the
    seeding's table preparation, here and nowhere else. The event, audit and outbox tables are
    partitioned by time (common/partitions.py): the seeded ones' partitions from ``oldest`` on
    are made first, as beat would have made them, so that seeded rows land in their own
    month's partition and not in the default one. Not the outbox's: nothing is seeded there,
    and production keeps only its last days (each partition is one more for every relay and
    consumer query to plan over)."""
    from common.partitions import ensure_partitions
    from payments.partitions import AUDIT, EVENTS

    ensure_partitions(since=oldest, specs=(EVENTS, AUDIT))


# --- the merchants ---


@dataclass(frozen=True)
class Merchant:
    """A seeded merchant, as the generator needs it."""

    id: str
    actor: str  # how its payments' first event names the API key that created them
    gateways: tuple[str, ...]


def merchants(count: int) -> list[Merchant]:
    """The seeded merchants, the benches' own first, made the first time (sandbox gateways,
    a test key each)."""
    from payments.merchants import merchant_create
    from payments.models import Merchant as MerchantModel

    names = [BENCH_MERCHANT] + [OTHER_MERCHANT.format(n) for n in range(2, count + 1)]
    found: list[Merchant] = []
    for name in names:
        row = MerchantModel.objects.filter(name=name).order_by("id").first()
        if row is None:
            row, _key = merchant_create(name=name)
        key = row.api_keys.order_by("id").first()
        if key is None:
            raise RuntimeError(f"merchant {row.pk} ({name}) has no API key")
        found.append(Merchant(row.pk, f"api_key:{key.prefix}", tuple(row.gateways)))
    return found


# --- one payment's rows ---

_RISK = {"rules": [], "decision": "approve", "unchecked": []}
_ROUTING_WEIGHTS = {"cost": 0.2, "health": 0.2, "latency": 0.3, "success": 0.5}
_CARDS = (  # (weight, token, brand, last4): the sandbox's approving test cards
    (3, "tok_visa", "visa", "4242"),
    (1, "tok_mastercard", "mastercard", "4444"),
)
_CURRENCIES = ("USD",) * 7 + ("EUR",) * 2 + ("GBP",)


@dataclass
class Batch:
    """One transaction's rows, table by table, and the summary rows they add to."""

    payments: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    applied: list[tuple[Any, ...]] = field(default_factory=list)
    summary: dict[tuple[str, date, str, str], list[int]] = field(default_factory=dict)


class Generator:
    """Payments as the system leaves an automatic-capture card payment that completed, with
    everything that refers to them; deterministic for a ``seed``."""

    def __init__(self, merchants: Sequence[Merchant], seed: int) -> None:
        from django.conf import settings

        from common.isotime import iso
        from payments.eventstore import PROJECTED_FIELDS
        from payments.models import Payment
        from routing.conf import setting

        self.rng = random.Random(seed)
        # 1,024 slots shared out by weight: merchant k (from 1) gets 1/k of the first's share.
        weights = [1 / k for k in range(1, len(merchants) + 1)]
        slots = [int(1024 * w / sum(weights)) for w in weights]
        self.slots = [m for m, n in zip(merchants, slots, strict=True) for _ in range(n)]
        self.slots += [merchants[0]] * (1024 - len(self.slots))  # what rounding down left
        self.cards = [card[1:] for card in _CARDS for _ in range(card[0])]
        self.expiry = timedelta(hours=settings.AUTHORIZATION_EXPIRY_HOURS)
        self.reconcile_ms = int(settings.RECONCILE_AFTER_SECONDS * 1000)
        self.buckets = sorted(setting("ROUTING_AMOUNT_BUCKETS"))
        # payment.initiated sets every projected field: those not given, to their defaults.
        self.initial = {
            name: Payment._meta.get_field(name).get_default() for name in PROJECTED_FIELDS
        }
        self.routing: dict[tuple[str, str, str], str] = {}
        self.iso = iso

    def _routing(self, segment: str, chosen: str, gateways: Sequence[str]) -> str:
        """A routing decision as the router records it (JSON), one per segment and choice."""
        key = (segment, chosen, ",".join(gateways))
        if key not in self.routing:
            order = [chosen, *(g for g in gateways if g != chosen)]
            candidates = [
                {
                    "score": round(1.07 - 0.025 * n, 6),
                    "inputs": {
                        "fee": 50.1 + 9 * n,
                        "cost": 1.0 - 0.15 * n,
                        "errors": 0,
                        "health": 1.0,
                        "latency": 0.998611,
                        "samples": 200,
                        "success": 0.818182,
                        "approved": 164,
                        "declined": 36,
                        "exploration": 0.146489,
                        "latency_p95_ms": 457.27,
                    },
                    "gateway": gateway,
                }
                for n, gateway in enumerate(order)
            ]
            self.routing[key] = json.dumps(
                {
                    "after": None,
                    "notes": [],
                    "segment": segment,
                    "weights": _ROUTING_WEIGHTS,
                    "excluded": [],
                    "gateways": order,
                    "strategy": "score",
                    "candidates": candidates,
                }
            )
        return self.routing[key]

    def payment(self, batch: Batch, millis: int) -> None:
        """One payment created at ``millis`` and all its rows, added to ``batch``."""
        iso = self.iso
        rng = self.rng
        rand = rng.random
        bits = rng.getrandbits
        merchant = self.slots[bits(10)]
        amount = max(50, min(int(rng.lognormvariate(7.6, 1.2)), 10**8))
        currency = _CURRENCIES[int(rand() * 10)]
        token, brand, last4 = self.cards[int(rand() * len(self.cards))]
        gateway = merchant.gateways[int(rand() * len(merchant.gateways))]
        bucket = next((f"lt{b}" for b in self.buckets if amount < b), f"ge{self.buckets[-1]}")
        routing = self._routing(f"{currency}:*:{bucket}", gateway, merchant.gateways)
        customer = {"email": f"customer{bits(20)}@example.com"} if rand() < 0.6 else {}
        reference = f"order-{bits(40):010x}" if rand() < 0.8 else ""
        correlation = f"{bits(128):032x}"
        charge = f"ch_{bits(128):032x}"

        # The times of one lifecycle, in ms: created, queued, authorised, captured, completed.
        created = millis
        initiated = created + 1 + int(rand() * 15)
        authorize_at = initiated + 5 + int(rand() * 400)  # the processing task's queue wait
        processing = authorize_at + 2 + int(rand() * 8)
        authorize_done = processing + 10 + int(rand() * 300)
        authorized = authorize_done + 2 + int(rand() * 8)
        capture_at = authorized + 5 + int(rand() * 25)
        capture_done = capture_at + 10 + int(rand() * 300)
        captured = capture_done + 2 + int(rand() * 6)
        completed = captured + 1 + int(rand() * 8)

        payment_id = _id("pay", created, rng)
        authorize_id = _id("att", authorize_at, rng)
        capture_id = _id("att", capture_at, rng)
        expires = _at(authorize_done) + self.expiry
        card = {"type": "card", "token": token}
        full_card = {"type": "card", "brand": brand, "last4": last4, "token": token}
        settled = _at(completed)
        batch.payments.append(
            (
                payment_id,
                merchant.id,
                "completed",
                amount,
                currency,
                amount,
                amount,
                json.dumps(full_card),
                json.dumps(customer),
                reference,
                gateway,
                charge,
                expires,
                EVENTS_PER_PAYMENT,  # its version: one per event
                _at(created),
                settled,
                settled,
            )
        )
        initial = {
            **self.initial,
            "amount": amount,
            "currency": currency,
            "payment_method": card,
            "customer": customer,
            "merchant_reference": reference,
        }
        gateway_answer = {"gateway": gateway, "outcome": "succeeded", "verdict": "succeeded"}
        processing_data = json.dumps(
            {"risk": _RISK, "attempt": authorize_id, "changes": {"gateway": gateway}}
        )
        events = (
            (initiated, "payment.initiated", "", "initiated", {"changes": initial}),
            (
                processing,
                "payment.processing",
                "initiated",
                "processing",
                # The router's decision is serialised once per segment: spliced in, not dumped.
                f'{processing_data[:-1]}, "gateway": "{gateway}", "routing": {routing}}}',
            ),
            (
                authorized,
                "payment.authorized",
                "processing",
                "authorized",
                {
                    "code": None,
                    "attempt": authorize_id,
                    "changes": {
                        "gateway": gateway,
                        "payment_method": full_card,
                        "amount_authorized": amount,
                        "gateway_reference": charge,
                        "authorization_expires_at": iso(expires),
                    },
                    **gateway_answer,
                    "operation": "authorize",
                    "latency_ms": authorize_done - processing,
                },
            ),
            (
                captured,
                "payment.captured",
                "authorized",
                "captured",
                {
                    "code": None,
                    "attempt": capture_id,
                    "changes": {"amount_captured": amount},
                    **gateway_answer,
                    "operation": "capture",
                    "latency_ms": capture_done - capture_at,
                },
            ),
            (completed, "payment.completed", "captured", "completed", {"changes": {}}),
        )
        for sequence, (at, kind, before, after, data) in enumerate(events, start=1):
            event_id = _id("evt", at, rng)
            when = _at(at)
            actor = merchant.actor if sequence == 1 else "system"
            batch.events.append(
                (
                    event_id,
                    payment_id,
                    sequence,
                    kind,
                    before,
                    after,
                    data if isinstance(data, str) else json.dumps(data),
                    actor,
                    correlation,
                    when,
                )
            )
            batch.audit.append(
                (
                    event_id,
                    merchant.id,
                    payment_id,
                    sequence,
                    kind,
                    before,
                    after,
                    actor,
                    correlation,
                    when,
                )
            )
            # The read models apply an event after the relay's consumer pass takes it up.
            batch.applied.append((event_id, _at(at + 50 + int(rand() * 1500))))
        for number, (attempt_id, operation, begun, done, decision) in enumerate(
            (
                (authorize_id, "authorize", authorize_at, authorize_done, routing),
                (capture_id, "capture", capture_at, capture_done, "{}"),
            ),
            start=1,
        ):
            batch.attempts.append(
                (
                    attempt_id,
                    payment_id,
                    number,
                    operation,
                    gateway,
                    "succeeded",
                    amount,
                    currency,
                    charge,
                    done - begun,
                    decision,
                    _at(begun),
                    _at(done),
                    1,
                    True,
                    f"{bits(128):032x}",
                    _at(begun + self.reconcile_ms),
                )
            )
        # Its one place in the merchant daily summary: the UTC day of payment.initiated.
        key = (merchant.id, _at(initiated).date(), "completed", currency)
        totals = batch.summary.setdefault(key, [0, 0, 0, 0, 0])
        totals[0] += 1
        totals[1] += amount
        totals[2] += amount
        totals[3] += amount


# --- seeding ---


def count_events() -> int:
    """How many events the database holds: what the sizes count."""
    from django.db import connection

    from payments.models import PaymentEvent

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {PaymentEvent._meta.db_table}")  # noqa: S608
        (count,) = cursor.fetchone()
    return int(count)


def _copy(cursor: Any, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` into ``table`` by one COPY, each completed with the table's defaults."""
    defaults = table.defaults
    with cursor.copy(table.copy_sql) as copy:
        write = copy.write_row
        if defaults:
            for row in rows:
                write(row + defaults)
        else:
            for row in rows:
                write(row)


def _write(tables: Tables, batch: Batch) -> None:
    """One batch in one transaction: the payments first (the others refer to them), the summary
    rows added to last (one statement, in key order: concurrent batches cannot deadlock)."""
    from django.db import connection, transaction

    from payments.projections.read_models import summary_write

    with transaction.atomic(), connection.cursor() as cursor:
        _copy(cursor, tables.payment, batch.payments)
        _copy(cursor, tables.event, batch.events)
        _copy(cursor, tables.attempt, batch.attempts)
        _copy(cursor, tables.audit, batch.audit)
        _copy(cursor, tables.applied, batch.applied)
        summary_write(batch.summary, absolute=False)


@dataclass(frozen=True)
class Plan:
    """One growth step: ``payments`` payments, payment ``i`` at ``oldest + (i + jitter) *
    step`` ms, in chunks of ``chunk``; chunk ``n``'s data follows from ``seed`` and ``n``
    alone, whichever process makes it."""

    tables: Tables
    merchants: tuple[Merchant, ...]
    payments: int
    oldest: int
    step: float
    chunk: int
    seed: int

    @property
    def chunks(self) -> int:
        return math.ceil(self.payments / self.chunk)


# A seeding process's plan and generator (_start_worker), module-level for the pool's workers.
_plan: Plan | None = None
_generator: Generator | None = None


def _start_worker(plan: Plan) -> None:
    """Set a seeding process up. In a forked one, signals are the pool's: Ctrl-C reaches the
    parent, which terminates the pool (SIGTERM: the process ends, its transaction rolls back)."""
    global _plan, _generator
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
    _plan, _generator = plan, Generator(plan.merchants, plan.seed)


def _seed_chunk(number: int) -> int:
    """Chunk ``number`` of the plan generated and written in one transaction; how many
    payments it held."""
    plan, generator = _plan, _generator
    if plan is None or generator is None:
        raise RuntimeError("_start_worker first")
    generator.rng.seed(f"{plan.seed}/{number}")
    batch = Batch()
    for index in range(number * plan.chunk, min((number + 1) * plan.chunk, plan.payments)):
        generator.payment(batch, plan.oldest + int((index + generator.rng.random()) * plan.step))
    _write(plan.tables, batch)
    return len(batch.payments)


@contextmanager
def _workers(plan: Plan, jobs: int) -> Iterator[Callable[[Iterable[int]], Iterator[int]]]:
    """A map of ``_seed_chunk`` over chunk numbers: in this process (``jobs`` 1) or in a pool
    of ``jobs`` forked processes, each on a connection of its own (this one's is closed
    first), results as they come. Leaving early (an error, Ctrl-C) stops the pool at once:
    the chunks being written roll back."""
    from django.db import connection

    if jobs == 1:
        _start_worker(plan)
        yield lambda numbers: map(_seed_chunk, numbers)
        return
    connection.close()
    with multiprocessing.get_context("fork").Pool(jobs, _start_worker, (plan,)) as pool:
        yield lambda numbers: pool.imap_unordered(_seed_chunk, numbers)
        pool.close()
        pool.join()


@dataclass(frozen=True)
class Seeded:
    """What one growth step copied in, how long it took and how long VACUUM ANALYZE took."""

    events: int
    payments: int
    seconds: float
    vacuum_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def seed(
    *,
    payments: int,
    merchants: Sequence[Merchant],
    days: float,
    chunk: int,
    seed: int,
    jobs: int,
) -> Seeded:
    """Copy in ``payments`` payments spread evenly over the ``days`` before now, oldest first,
    ``chunk`` per transaction, by ``jobs`` processes, then VACUUM ANALYZE the tables. Prints
    progress and the rate."""
    from django.db import connection

    from payments.models import MerchantDailySummary

    tables = Tables.from_models()  # before anything is written: refuses unknown columns
    newest = int(time.time() * 1000) - 60_000  # a lifecycle takes < 3 s: all in the past
    span = int(days * 86_400_000)
    oldest = newest - span
    _prepare_tables(_at(oldest))
    plan = Plan(tables, tuple(merchants), payments, oldest, span / payments, chunk, seed)
    started = last_report = time.monotonic()
    done = 0
    with _workers(plan, min(jobs, plan.chunks)) as run:
        for count in run(range(plan.chunks)):
            done += count
            now = time.monotonic()
            if now - last_report >= PROGRESS_SECONDS and done < payments:
                last_report = now
                print(
                    f"  {done * EVENTS_PER_PAYMENT:,} of {payments * EVENTS_PER_PAYMENT:,} "
                    f"events, {done * EVENTS_PER_PAYMENT / (now - started):,.0f} events/s",
                    flush=True,
                )
    seconds = time.monotonic() - started
    vacuum_started = time.monotonic()
    with connection.cursor() as cursor:
        for name in [*tables.names(), MerchantDailySummary._meta.db_table]:
            cursor.execute(f"VACUUM (ANALYZE) {name}")
    seeded = Seeded(
        payments * EVENTS_PER_PAYMENT, payments, seconds, time.monotonic() - vacuum_started
    )
    print(
        f"seeded {seeded.events:,} events ({payments:,} payments; with their attempts, audit "
        f"entries and applied records, by COPY, {min(jobs, plan.chunks)} process(es)) in "
        f"{seconds:.1f}s = {seeded.rate:,.0f} events/s; "
        f"VACUUM ANALYZE {seeded.vacuum_seconds:.1f}s",
        flush=True,
    )
    return seeded


# --- the benches, as child processes ---


@contextmanager
def _forwarded(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGTERM and SIGHUP (the launcher forwards them here) reach the bench as SIGINT, which
    both benches turn into an orderly stop of their servers; Ctrl-C reaches it directly (one
    process group). Either way the bench is waited for, then KeyboardInterrupt raised here."""
    stopped: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopped.append(signum)
        child.send_signal(signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except KeyboardInterrupt:
        stopped.append(signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        child.wait()
        raise KeyboardInterrupt(signal.Signals(stopped[0]).name)


def run_bench(name: str, options: Sequence[str], merchant_id: str) -> tuple[int, Any]:
    """``bench/<name>.py`` on this database with ``--keep-data`` as ``merchant_id``, its
    output shown as it comes; returns its exit code and its ``--json`` results (None when it
    wrote none)."""
    with tempfile.TemporaryDirectory() as scratch:
        results = Path(scratch) / f"{name}.json"
        argv = [
            sys.executable,
            str(REPO / "bench" / f"{name}.py"),
            *["--database", os.environ["DATABASE_NAME"], "--keep-data"],
            *["--merchant", merchant_id, "--json", str(results), *options],
        ]
        print(f"\n$ bench/{name}.py {' '.join(argv[2:])}", flush=True)
        child = subprocess.Popen(argv, cwd=REPO)
        with _forwarded(child):
            code = child.wait()
        data = json.loads(results.read_text()) if results.exists() else None
    return code, data


# --- the table ---


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def api_figures(api: Any) -> dict[str, float | None]:
    """AegisPay's POST and GET figures from bench-api's JSON: medians over the rounds, and
    the median of the rounds' throughput ratios to the reference."""
    figures: dict[str, float | None] = {}
    for index, method in enumerate(("post", "get")):
        rounds = [pair[index] for pair in (api or {}).get("aegispay", [])]
        for name, key in (("rps", "requests_per_second"), ("p50", "p50_ms"), ("p99", "p99_ms")):
            figures[f"{method}_{name}"] = _median([r[key] for r in rounds])
        figures[f"{method}_ratio"] = ((api or {}).get("median") or {}).get(f"{method}_ratio")
    return figures


def lifecycle_figures(lifecycle: Any) -> dict[str, float | None]:
    stage = ((lifecycle or {}).get("stages_ms") or {}).get("create -> authorized") or {}
    return {
        "payments_per_second": (lifecycle or {}).get("payments_per_second"),
        "create_to_authorized_p50_ms": stage.get("p50"),
    }


def _cell(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    print(
        "\nAegisPay as the event table grows (POST/GET /v1/payments: medians over the rounds; "
        "x ref: throughput ratio to the bare DRF reference)"
    )
    print(
        f"{'events':>12} | {'POST/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'x ref':>6} | "
        f"{'GET/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'x ref':>6} | "
        f"{'lifecycle/s':>11} {'create->authorized p50 ms':>25}"
    )
    for row in rows:
        a, lc = row["api_figures"], row["lifecycle_figures"]
        print(
            f"{row['events']:>12,} | "
            f"{_cell(a['post_rps'], '.1f', 7)} {_cell(a['post_p50'], '.1f', 7)} "
            f"{_cell(a['post_p99'], '.1f', 7)} {_cell(a['post_ratio'], '.2f', 5)}x | "
            f"{_cell(a['get_rps'], '.1f', 7)} {_cell(a['get_p50'], '.1f', 7)} "
            f"{_cell(a['get_p99'], '.1f', 7)} {_cell(a['get_ratio'], '.2f', 5)}x | "
            f"{_cell(lc['payments_per_second'], '.1f', 11)} "
            f"{_cell(lc['create_to_authorized_p50_ms'], '.1f', 25)}"
        )


# --- main ---


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or any(s < 0 for s in sizes) or sizes != sorted(sizes):
        raise argparse.ArgumentTypeError("ascending event counts, e.g. 0,1000000,10000000")
    return sizes


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=_sizes(DEFAULT_SIZES),
        help=f"events in the database at each measurement, ascending (default {DEFAULT_SIZES})",
    )
    parser.add_argument("--merchants", type=int, default=10, help="seeded merchants (10)")
    parser.add_argument("--days", type=float, default=90.0, help="seeded over these days (90)")
    parser.add_argument(
        "--chunk", type=int, default=10_000, help="payments per transaction (10000)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="seeding processes, each with a COPY of its own (default: one per CPU)",
    )
    parser.add_argument("--seed", type=int, default=13, help="random seed of the data (13)")
    parser.add_argument("--reuse", action="store_true", help="never empty the database first")
    parser.add_argument("--seed-only", action="store_true", help="seed, run no bench")
    parser.add_argument("--api-seconds", type=int, default=15, help="bench-api --seconds (15)")
    parser.add_argument("--api-rounds", type=int, default=2, help="bench-api --rounds (2)")
    parser.add_argument("--api-warmup", type=int, default=3, help="bench-api --warmup (3)")
    parser.add_argument(
        "--api-connections", type=int, default=32, help="bench-api --connections (32)"
    )
    parser.add_argument(
        "--lifecycle-payments", type=int, default=1000, help="bench-lifecycle --payments (1000)"
    )
    parser.add_argument(
        "--lifecycle-rate",
        type=float,
        default=0.0,
        help="bench-lifecycle --rate (0: as fast as it can)",
    )
    parser.add_argument(
        "--lifecycle-connections",
        type=int,
        default=16,
        help="bench-lifecycle --connections (16)",
    )
    parser.add_argument(
        "--lifecycle-timeout",
        type=float,
        default=300.0,
        help="bench-lifecycle --timeout (300)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    args = parser.parse_args()
    if args.merchants < 1 or args.chunk < 1 or args.jobs < 1 or args.days <= 0:
        parser.error("--merchants, --chunk and --jobs must be positive, --days above 0")
    # SIGTERM and SIGHUP (the launcher forwards them) end the run as Ctrl-C does: the seeding's
    # open transactions roll back, a running bench is stopped in order (_forwarded).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    benchdb.setup(DATABASE)
    from django.db import connection

    database = os.environ["DATABASE_NAME"]
    current = count_events()
    if current > args.sizes[0] and not args.reuse:
        print(f"{database} holds {current:,} events, more than {args.sizes[0]:,}: emptying it")
        benchdb.empty_tables()
    seeded_merchants = merchants(args.merchants)
    bench_merchant = seeded_merchants[0].id
    api_options = [
        *["--seconds", str(args.api_seconds), "--rounds", str(args.api_rounds)],
        *["--warmup", str(args.api_warmup), "--connections", str(args.api_connections)],
    ]
    lifecycle_options = [
        *["--payments", str(args.lifecycle_payments), "--rate", str(args.lifecycle_rate)],
        *["--connections", str(args.lifecycle_connections)],
        *["--timeout", str(args.lifecycle_timeout)],
    ]
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        for size in args.sizes:
            current = count_events()
            print(f"\n=== {size:,} events (the database holds {current:,}) ===", flush=True)
            seeded = None
            if current < size:
                payments = math.ceil((size - current) / EVENTS_PER_PAYMENT)
                seeded = seed(
                    payments=payments,
                    merchants=seeded_merchants,
                    days=args.days,
                    chunk=args.chunk,
                    jobs=args.jobs,
                    seed=args.seed + current,  # a new stream for each step: no repeated rows
                )
            row: dict[str, Any] = {
                "size": size,
                "events": count_events(),
                "seeded": seeded.__dict__ | {"rate": round(seeded.rate)} if seeded else None,
            }
            if not args.seed_only:
                connection.close()  # nothing of this process holds the database meanwhile
                row["api_exit"], row["api"] = run_bench("api", api_options, bench_merchant)
                row["lifecycle_exit"], row["lifecycle"] = run_bench(
                    "lifecycle", lifecycle_options, bench_merchant
                )
                failed |= bool(row["api_exit"] or row["lifecycle_exit"])
                row["api_figures"] = api_figures(row["api"])
                row["lifecycle_figures"] = lifecycle_figures(row["lifecycle"])
            rows.append(row)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'})")
        return 130
    finally:
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"database": database, "options": vars(args) | {"json": str(args.json)}}
                    | {"sizes": rows},
                    indent=2,
                    default=str,
                )
                + "\n"
            )
    if not args.seed_only:
        print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
