"""A model row's INSERT or UPDATE as SQL text and parameters, to be sent as part of a larger
statement (issue 13: the payment, its event and the event's outbox row in one round trip).

The values are the ones ``Model.save`` would write: each field's ``pre_save`` (defaults already
set on the instance, ``auto_now`` and ``auto_now_add``) and ``get_db_prep_save`` (JSON, dates).
No signals are sent, as none are
connected to the models written this way (``save`` would send them); after the statement ran,
``mark_saved`` makes the instance what ``save`` would have left.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Field, Model
from django.db.models.expressions import DatabaseDefault

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
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
