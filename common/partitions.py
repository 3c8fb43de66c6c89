"""Range partitions by time for the tables that only grow: the event, audit and outbox tables.

Each such table is a PostgreSQL declarative partitioned table (``PARTITION BY RANGE``), split by
UTC day or month of its key:

- a timestamp column (the audit trail's ``created_at``, the outbox's ``created_at``), or
- a time-ordered id column (``common/ids.py``: 48 bits of milliseconds lead every id, so ids
  sort by the time they were made). The event table is split by its ``payment_id``, that is by
  the time its payment was created: every event of one payment lives in one partition, a
  lookup by payment reads one partition, and ``(payment, sequence)``, the event store's
  optimistic-concurrency check, stays a unique constraint over the whole table (a unique
  constraint on a partitioned table must include the partition key).

Every table also has a DEFAULT partition, so that an insert never fails because no partition
was made for its time (beat down for weeks, a clock far off): a payment is never refused for
it. ``ensure_partitions`` (beat, ``partitions_maintain``) keeps partitions made
``PARTITIONS_AHEAD`` periods ahead, so the default partition normally stays empty; a range
whose rows did land there is left to it (logged; the rows are kept and found like any others).

Row-level triggers (the event table's append-only ``UPDATE``/``DELETE`` refusal) are cloned to
every partition by PostgreSQL itself. Statement-level ones (its ``TRUNCATE`` refusal) are not,
and truncating a partition directly would skip the parent's: ``ensure_partitions`` copies them
onto every partition, under the same name and function, so that ``pgtrigger.ignore`` still
names them.

A table can have members partitioned with the same bounds on a copy of its key (the outbox's
consumer marks, by their row's ``created_at``): they are made with it and dropped before it.
Old partitions are dropped, never emptied by ``DELETE`` (``drop_partitions``; the outbox's
retention in ``outbox/relay.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from psycopg.errors import LockNotAvailable

from .ids import id_floor, id_millis

logger = logging.getLogger(__name__)

Interval = Literal["day", "month"]

# One maintenance run at a time across every process (pg_advisory_xact_lock's key).
_LOCK_ID = 0x7061_7274  # "part"


@dataclass(frozen=True, slots=True)
class Partitioned:
    """A partitioned table: ``members`` are ``(table, key column)`` pairs sharing its bounds,
    the first the one the others reference (made first, dropped last)."""

    members: tuple[tuple[str, str], ...]
    interval: Interval
    # The key is a time-ordered id "<id_prefix>_…" (common/ids.py), not a timestamp.
    id_prefix: str = ""

    @property
    def table(self) -> str:
        return self.members[0][0]


_REGISTRY: dict[str, Partitioned] = {}


def register(spec: Partitioned) -> None:
    """Declare a partitioned table (from its app's ``AppConfig.ready``)."""
    _REGISTRY[spec.table] = spec


def registered() -> tuple[Partitioned, ...]:
    return tuple(_REGISTRY.values())


def period_start(interval: Interval, when: datetime) -> datetime:
    """The UTC day or month that ``when`` falls in."""
    when = when.astimezone(UTC)
    if interval == "day":
        return when.replace(hour=0, minute=0, second=0, microsecond=0)
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_start(interval: Interval, start: datetime) -> datetime:
    if interval == "day":
        return start + timedelta(days=1)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def partition_name(table: str, interval: Interval, start: datetime) -> str:
    return f"{table}_p{start:%Y%m%d}" if interval == "day" else f"{table}_p{start:%Y%m}"


def default_name(table: str) -> str:
    return f"{table}_default"


_NAME = re.compile(r"_p(\d{8}|\d{6})$")


def partition_start(name: str) -> datetime | None:
    """The period a partition named by ``partition_name`` starts; ``None`` for other names."""
    match = _NAME.search(name)
    if match is None:
        return None
    digits = match.group(1)
    fmt = "%Y%m%d" if len(digits) == 8 else "%Y%m"
    return datetime.strptime(digits, fmt).replace(tzinfo=UTC)


def _bound(spec: Partitioned, start: datetime) -> str:
    if spec.id_prefix:
        return id_floor(spec.id_prefix, int(start.timestamp() * 1000))
    return start.isoformat()


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def partitions_of(cursor: Any, table: str) -> list[str]:
    """The names of ``table``'s partitions (the default one included), by name."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
        [table],
    )
    return [row[0] for row in cursor.fetchall()]


def _default_holds(cursor: Any, table: str, key: str, low: str, high: str) -> bool:
    default = default_name(table)
    if default not in partitions_of(cursor, table):
        return False
    cursor.execute(
        f"SELECT EXISTS (SELECT 1 FROM {_quote(default)} "  # noqa: S608 - names from code
        f"WHERE {_quote(key)} >= %s AND {_quote(key)} < %s)",
        [low, high],
    )
    return bool(cursor.fetchone()[0])


def _periods(interval: Interval, since: datetime, now: datetime, ahead: int) -> Iterator[datetime]:
    """The starts of the periods from the one ``since`` falls in to ``ahead`` past now's."""
    start, end = period_start(interval, since), period_start(interval, now)
    for _ in range(ahead):
        end = next_start(interval, end)
    while start <= end:
        yield start
        start = next_start(interval, start)


def create_period(cursor: Any, spec: Partitioned, start: datetime) -> list[str]:
    """Make the partitions of ``spec``'s members for the period at ``start`` that are missing;
    returns their names.

    Makes none when rows of that range already sit in a default partition (PostgreSQL refuses
    the new partition then; the rows stay where they are)."""
    low, high = _bound(spec, start), _bound(spec, next_start(spec.interval, start))
    missing = [
        (table, key)
        for table, key in spec.members
        if partition_name(table, spec.interval, start) not in partitions_of(cursor, table)
    ]
    if not missing:
        return []
    if any(_default_holds(cursor, table, key, low, high) for table, key in missing):
        logger.warning(
            "rows of %s from %s are in its default partition; its partition is not made",
            spec.table,
            start.date(),
        )
        return []
    for table, _key in missing:
        _create_partition(cursor, spec, table, start)
    return [partition_name(table, spec.interval, start) for table, _key in missing]


def _create_partition(cursor: Any, spec: Partitioned, table: str, start: datetime) -> None:
    cursor.execute(
        f"CREATE TABLE {_quote(partition_name(table, spec.interval, start))} "
        f"PARTITION OF {_quote(table)} FOR VALUES FROM (%s) TO (%s)",
        [_bound(spec, start), _bound(spec, next_start(spec.interval, start))],
    )


def create_default(cursor: Any, table: str) -> None:
    if default_name(table) not in partitions_of(cursor, table):
        cursor.execute(
            f"CREATE TABLE {_quote(default_name(table))} PARTITION OF {_quote(table)} DEFAULT"
        )


def copy_statement_triggers(cursor: Any, table: str) -> int:
    """Give every partition of ``table`` each statement-level trigger ``table`` has (same name,
    same function), which PostgreSQL does not clone; returns how many were made."""
    cursor.execute(
        "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
        "WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal AND t.tgparentid = 0 "
        "AND (t.tgtype & 1) = 0",
        [table],
    )
    triggers = cursor.fetchall()
    made = 0
    on_parent = re.compile(rf" ON (public\.)?{re.escape(table)} ")
    for partition in partitions_of(cursor, table):
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass", [partition])
        present = {row[0] for row in cursor.fetchall()}
        for name, definition in triggers:
            if name in present:
                continue
            sql, count = on_parent.subn(f" ON {_quote(partition)} ", definition, count=1)
            if count != 1:
                raise RuntimeError(f"cannot read trigger {name} of {table}: {definition}")
            cursor.execute(sql)
            made += 1
    return made


def ensure_partitions(
    *,
    since: datetime | None = None,
    ahead: int | None = None,
    now: datetime | None = None,
    specs: Iterable[Partitioned] | None = None,
) -> list[str]:
    """Make the partitions of ``specs`` (default: every registered table) from the period of
    ``since`` (default: now) to ``ahead`` periods past now (default ``PARTITIONS_AHEAD``), and
    copy statement triggers onto every partition. Idempotent; one run at a time (an advisory
    lock). Returns the names of the partitions it made."""
    now = now or timezone.now()
    ahead = settings.PARTITIONS_AHEAD if ahead is None else ahead
    made: list[str] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
        for spec in registered() if specs is None else specs:
            for start in _periods(spec.interval, since or now, now, ahead):
                made.extend(create_period(cursor, spec, start))
            for table, _key in spec.members:
                copy_statement_triggers(cursor, table)
    return made


def drop_partitions(
    spec: Partitioned, *, before: datetime, busy_sql: str, params: Iterable[Any] = ()
) -> list[str]:
    """Drop ``spec``'s partitions whose period ended at or before ``before``, each unless
    ``busy_sql`` says it still holds something to keep.

    ``busy_sql`` is a query returning one boolean, with ``{0}``, ``{1}``, … placeholders for
    the period's partition of each member (in ``spec.members`` order), and ``params`` its
    parameters. Each period is checked and dropped in a transaction of its own that first locks
    the members' parent tables alone (``LOCK TABLE ONLY``, ACCESS EXCLUSIVE: every write goes
    through them, so nothing can be written to the partition between its check and its drop),
    waiting at most ``PARTITION_LOCK_TIMEOUT_MS``: when the lock is not had in time, this run
    stops and the next one goes on. Members are dropped last first. Returns the names
    dropped."""
    with connection.cursor() as cursor:
        starts = sorted(
            start
            for name in partitions_of(cursor, spec.table)
            if (start := partition_start(name)) is not None
            and next_start(spec.interval, start) <= before
        )
    parents = ", ".join(_quote(table) for table, _ in spec.members)
    dropped: list[str] = []
    for start in starts:
        names = [partition_name(table, spec.interval, start) for table, _ in spec.members]
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('lock_timeout', %s, true)",
                    [f"{settings.PARTITION_LOCK_TIMEOUT_MS}ms"],
                )
                cursor.execute(f"LOCK TABLE ONLY {parents} IN ACCESS EXCLUSIVE MODE")
                cursor.execute(busy_sql.format(*(_quote(n) for n in names)), list(params))
                if cursor.fetchone()[0]:
                    continue
                for (table, _key), name in reversed(list(zip(spec.members, names, strict=True))):
                    drop_partition(cursor, table, name)
            dropped.extend(reversed(names))  # committed
        except OperationalError as exc:
            if not isinstance(exc.__cause__, LockNotAvailable):
                raise
            logger.info("%s is busy: its old partitions are left for the next run", spec.table)
            break
    return dropped


def drop_partition(cursor: Any, table: str, name: str) -> None:
    """Detach ``table``'s partition ``name`` and drop it (detached first: a partition of a
    table another one's foreign key references cannot be dropped while attached)."""
    cursor.execute(f"ALTER TABLE {_quote(table)} DETACH PARTITION {_quote(name)}")
    cursor.execute(f"DROP TABLE {_quote(name)}")


# --- turning an existing table into a partitioned one (migrations) ---


def convert_to_partitioned(
    cursor: Any, spec: Partitioned, *, table: str, key: str, ahead: int = 3
) -> None:
    """Turn the plain ``table`` (a member of ``spec``) into a table partitioned on ``key`` with
    the same columns, rows, constraints and indexes, in the migration's transaction.

    Partitions cover every period from its oldest row to ``ahead`` periods past now, plus the
    default one. Primary keys and unique constraints get ``key`` added (PostgreSQL requires
    it); foreign keys, checks and other indexes are kept as they were, under their names.
    Foreign keys *to* ``table`` from other tables are dropped: their migration re-makes them
    against the new key. Triggers are not carried over: their migrations install them again."""
    old = f"{table}_unpartitioned"
    cursor.execute(f"ALTER TABLE {_quote(table)} RENAME TO {_quote(old)}")
    cursor.execute(
        f"CREATE TABLE {_quote(table)} (LIKE {_quote(old)} INCLUDING DEFAULTS "
        f"INCLUDING IDENTITY INCLUDING STORAGE) PARTITION BY RANGE ({_quote(key)})"
    )
    cursor.execute(f"SELECT min({_quote(key)}) FROM {_quote(old)}")  # noqa: S608
    oldest = cursor.fetchone()[0]
    now = timezone.now()
    if oldest is None:
        since = now
    elif spec.id_prefix:
        since = datetime.fromtimestamp(id_millis(oldest) / 1000, tz=UTC)
    else:
        since = oldest
    create_default(cursor, table)
    for start in _periods(spec.interval, min(since, now), now, ahead):
        _create_partition(cursor, spec, table, start)
    cursor.execute(f"INSERT INTO {_quote(table)} SELECT * FROM {_quote(old)}")  # noqa: S608
    cursor.execute(
        "SELECT a.attname, pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a "
        "WHERE a.attrelid = %s::regclass AND a.attidentity <> ''",
        [table, table],
    )
    for column, sequence in cursor.fetchall():
        top = f"SELECT coalesce(max({_quote(column)}), 0) + 1 FROM {_quote(table)}"  # noqa: S608
        cursor.execute(f"SELECT setval(%s, ({top}), false)", [sequence])
    # What the old table had, to make again once its names are free.
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), "
        "ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY k(n, i) "
        "JOIN pg_attribute ON attrelid = conrelid AND attnum = k.n ORDER BY k.i) "
        "FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f', 'c') "
        "ORDER BY contype DESC, conname",
        [old],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = %s::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c "
        "WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)",
        [old],
    )
    indexes = [row[0] for row in cursor.fetchall()]
    cursor.execute(f"DROP TABLE {_quote(old)} CASCADE")
    for name, kind, definition, columns in constraints:
        if kind in ("p", "u"):
            columns = [*columns, key] if key not in columns else list(columns)
            clause = "PRIMARY KEY" if kind == "p" else "UNIQUE"
            definition = f"{clause} ({', '.join(_quote(c) for c in columns)})"
        cursor.execute(f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(name)} {definition}")
    on_old = re.compile(rf" ON (public\.)?{re.escape(old)} ")
    for definition in indexes:
        cursor.execute(on_old.sub(f" ON {_quote(table)} ", definition, count=1))
