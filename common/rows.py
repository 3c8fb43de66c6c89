"""A model row's INSERT or UPDATE as SQL text and parameters, to be sent as part of a larger
statement (issue 13: the payment, its event and the event's outbox row in one round trip), and
a hot SELECT compiled once per process (``Compiled``).

The values are the ones ``Model.save`` would write: each field's ``pre_save`` (defaults already
set on the instance, ``auto_now`` and ``auto_now_add``) and ``get_db_prep_save`` (JSON, dates).
No signals are sent, as none are
connected to the models written this way (``save`` would send them); after the statement ran,
``mark_saved`` makes the instance what ``save`` would have left.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Field, Model, QuerySet, query
from django.db.models.expressions import DatabaseDefault
from django.db.transaction import TransactionManagementError

from common.db import bound_cursor

Statement = tuple[str, list[Any]]


@cache
def _fields(model: type[Model]) -> tuple[tuple[Field[Any, Any], ...], tuple[str, ...]]:
    """The model's concrete fields and their quoted columns (concrete: each has a column)."""
    fields = tuple(model._meta.concrete_fields)
    quote = connection.ops.quote_name
    return fields, tuple(quote(str(field.column)) for field in fields)


def insert_statement(obj: Model) -> Statement:
    """``INSERT INTO <table> (<every column>) VALUES (...)`` for the new instance ``obj``. An
    auto-incremented key that is not set is left to the database (add ``RETURNING`` for it)."""
    fields, quoted = _fields(type(obj))
    columns: list[str] = []
    values: list[str] = []
    params: list[Any] = []
    for field, column in zip(fields, quoted, strict=True):
        if field.db_returning and getattr(obj, field.attname) is None:
            continue
        columns.append(column)
        value = field.pre_save(obj, True)
        if isinstance(value, DatabaseDefault):
            # save() would read the value back; give the field a Python default instead.
            raise TypeError(f"{field} has only a database default")
        values.append("%s")
        params.append(field.get_db_prep_save(value, connection))
    table = connection.ops.quote_name(obj._meta.db_table)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)})"  # noqa: S608
    return sql, params


def update_statement(obj: Model) -> Statement:
    """``UPDATE <table> SET <every column but the key> WHERE <key> = ...`` for the saved
    instance ``obj``, as ``obj.save()`` writes it."""
    fields, columns = _fields(type(obj))
    sets: list[str] = []
    params: list[Any] = []
    for field, column in zip(fields, columns, strict=True):
        if field.primary_key:
            continue
        sets.append(f"{column} = %s")
        params.append(field.get_db_prep_save(field.pre_save(obj, False), connection))
    meta = obj._meta
    pk = meta.pk
    if pk is None:  # every concrete model has one; this tells the type checker
        raise TypeError(f"{meta.label} has no primary key")
    params.append(pk.get_db_prep_value(obj.pk, connection))
    table = connection.ops.quote_name(meta.db_table)
    where = connection.ops.quote_name(str(pk.column))
    sql = f"UPDATE {table} SET {', '.join(sets)} WHERE {where} = %s"  # noqa: S608 - model's names
    return sql, params


def mark_saved(obj: Model) -> None:
    """What ``save`` leaves on an instance it wrote: no longer new, bound to the database."""
    obj._state.adding = False
    obj._state.db = connection.alias


def execute(statement: Statement) -> None:
    """Send one statement on its own, on the default connection."""
    sql, params = statement
    with bound_cursor() as cursor:
        cursor.execute(sql, params)


def insert(obj: Model) -> None:
    """Write the new instance ``obj`` as ``save()`` would, without the ORM's insert compiler,
    and leave it as ``save()`` would."""
    execute(insert_statement(obj))
    mark_saved(obj)


M = TypeVar("M", bound=Model)

# Django 5.2's (klass_info, select, db); the stubs give a later Django's signature.
_related_populators: Callable[..., list[Any]] = query.get_related_populators


@dataclass(frozen=True, slots=True)
class _Plan:
    model: Any  # the queryset's model class
    sql: str
    params: tuple[Any, ...]
    slots: tuple[int, ...]  # where each argument goes in ``params``
    converters: tuple[tuple[int, tuple[Sequence[Callable[..., Any]], Any]], ...]
    for_update: bool
    instances: bool  # a query of model instances (``fetch``), not of values (``rows``)
    init_list: tuple[str, ...] = ()
    start: int = 0
    end: int = 0
    populators: tuple[Any, ...] = ()


class Compiled(Generic[M]):
    """A model query compiled to SQL once per process, then run with new arguments.

    Django compiles a queryset to SQL on every evaluation: for the payment's lock, a join of
    three tables, that was half the CPU of the query in a py-spy profile of the worker (issue
    13), and the lock is taken three times a payment. ``build`` makes the queryset from its
    arguments (strings: each is compared with the field's prepared value, so a lookup that
    changes it, ``contains`` and the like, is refused); it is called once, with markers, and
    the SQL kept. Each run sends that SQL with the arguments in the markers' places and gives
    what the queryset would, on whichever thread's connection runs it: ``fetch`` the instances
    of a query of instances (``Model.from_db``, ``select_related``'s objects, the fields'
    converters), ``rows`` the converted rows of a ``values_list`` query (aggregates included).

    ``select_for_update`` keeps its rule: outside a transaction the run raises, as
    ``QuerySet`` does. Only the default database is used, as everywhere in AegisPay.
    """

    def __init__(self, build: Callable[..., QuerySet[M, Any]]) -> None:
        self._build = build
        self._plan: _Plan | None = None
        self._lock = threading.Lock()

    def _compile(self, arity: int) -> _Plan:
        markers = [f"\x00compiled-argument-{i}\x00" for i in range(arity)]
        queryset = self._build(*markers)
        compiler = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS)
        sql, params = compiler.as_sql()
        slots: list[int] = []
        for marker in markers:
            places = [i for i, value in enumerate(params) if value == marker]
            if len(places) != 1:
                raise ValueError(f"argument {marker!r} is not one parameter of {sql}")
            slots.append(places[0])
        select, klass_info = compiler.select, compiler.klass_info
        columns = [s[0] for s in select[0 : compiler.col_count]]
        common: dict[str, Any] = {
            "model": queryset.model,
            "sql": sql,
            "params": tuple(params),
            "slots": tuple(slots),
            "converters": tuple(compiler.get_converters(columns).items()),
            "for_update": bool(queryset.query.select_for_update),
        }
        if queryset._iterable_class is not query.ModelIterable:  # values(), values_list()
            return _Plan(**common, instances=False)
        if compiler.annotation_col_map or klass_info is None:
            raise ValueError("Compiled takes instances without annotations, or values_list")
        fields = klass_info["select_fields"]
        start, end = fields[0], fields[-1] + 1
        return _Plan(
            **common,
            instances=True,
            init_list=tuple(f[0].target.attname for f in select[start:end]),
            start=start,
            end=end,
            populators=tuple(_related_populators(klass_info, select, DEFAULT_DB_ALIAS)),
        )

    def _plan_for(self, arity: int) -> _Plan:
        plan = self._plan
        if plan is None:
            with self._lock:
                if self._plan is None:
                    self._plan = self._compile(arity)
                plan = self._plan
        if len(plan.slots) != arity:
            raise TypeError(f"this query takes {len(plan.slots)} arguments, not {arity}")
        return plan

    def _run(self, arguments: Sequence[str]) -> tuple[_Plan, list[list[Any]]]:
        plan = self._plan_for(len(arguments))
        conn = connections[DEFAULT_DB_ALIAS]
        if plan.for_update and conn.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = list(plan.params)
        for slot, argument in zip(plan.slots, arguments, strict=True):
            params[slot] = argument
        with bound_cursor() as cursor:
            cursor.execute(plan.sql, params)
            rows = [list(row) for row in cursor.fetchall()]
        for row in rows:
            for position, (functions, expression) in plan.converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, conn)
                row[position] = value
        return plan, rows

    def fetch(self, *arguments: str) -> list[M]:
        """The instances the queryset built from ``arguments`` would give."""
        plan, rows = self._run(arguments)
        if not plan.instances:
            raise TypeError("a values query: its rows() are tuples, not instances")
        model: type[M] = plan.model
        found: list[M] = []
        for row in rows:
            obj = model.from_db(DEFAULT_DB_ALIAS, plan.init_list, row[plan.start : plan.end])
            for populator in plan.populators:
                populator.populate(row, obj)
            found.append(obj)
        return found

    def rows(self, *arguments: str) -> list[tuple[Any, ...]]:
        """The rows of the ``values_list`` query built from ``arguments``, as tuples."""
        plan, rows = self._run(arguments)
        if plan.instances:
            raise TypeError("a query of instances: fetch() them")
        return [tuple(row) for row in rows]

    def first(self, *arguments: str) -> M | None:
        """The first instance found, or ``None`` (the query orders and slices itself)."""
        found = self.fetch(*arguments)
        return found[0] if found else None

    def get(self, *arguments: str) -> M:
        """The one instance found, as ``QuerySet.get``: ``DoesNotExist`` when there is none,
        ``MultipleObjectsReturned`` when there are more."""
        found = self.fetch(*arguments)
        if len(found) == 1:
            return found[0]
        model = self._plan_for(len(arguments)).model
        if not found:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        raise model.MultipleObjectsReturned(
            f"get() returned more than one {model._meta.object_name}"
        )
