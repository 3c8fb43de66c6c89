"""Statements PostgreSQL keeps prepared on each connection (issue 13).

Django binds parameters on the client: every statement reaches PostgreSQL as new text and is
planned on every execution. On the partitioned tables (events, audit trail, outbox and its
consumer marks) planning can cost more than running: a ``bench-lifecycle`` run of 1,000
payments with ``pg_stat_statements`` spent 7.0 s planning against 5.1 s executing, and the
relay's and the consumers' claims 0.34 to 0.45 ms each to plan against 0.06 to 0.12 ms to run.

``bound_cursor()`` is a cursor of Django's own connection (its transaction, its error
wrapping, its query log and execute wrappers) that sends the parameters apart from the
statement. psycopg prepares a statement once it has run ``DB_PREPARE_THRESHOLD`` times on the
connection; PostgreSQL then plans it with the parameters for its first executions and, when a
generic plan costs no more, keeps that one (it prunes partitions as it runs) and plans no more.

Only statements whose generic plan is as good as a planned one belong here: the claims, which
read partial indexes by constants and a limit; the hot row reads compiled once
(``common.rows.Compiled``: by a key or a unique index), the row writes of ``common.rows``
(``execute``: by primary key, or inserts), the payment's write with its event and outbox rows
(``outbox.services.outbox_messages_create``), the Idempotency-Key's claim, and the sandbox's
ledger writes. With those prepared a ``bench-lifecycle`` run spent about a fifth less of
PostgreSQL's CPU a payment (issue 13). Not the statements driven by an array of ids to filter
by (``= ANY(%s)``): tried in the same bench, their generic plans cost 2 to 9 times the
execution time of planned ones, more than the planning they saved. The rest of the ORM's
statements stay client-bound: its SQL does not always give PostgreSQL the parameter types it
needs.

``DB_PREPARE_THRESHOLD=`` (empty) turns preparing off, for a pooler in transaction mode that
cannot follow prepared statements (PgBouncer before 1.21); the statements still run, bound.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorWrapper

# Django's psycopg 3 cursor that binds on the server (its OPTIONS "server_side_binding" would
# make it every cursor's); the stubs do not know its constructor.
_SERVER_BINDING: Any = base.ServerBindingCursor


def bound_cursor() -> CursorWrapper:
    """A cursor of the default connection whose statements psycopg may keep prepared; use it
    as ``with bound_cursor() as cursor:`` (Django's cursor closes itself at the block's end).
    It runs several times a payment, so the connection is looked up once (issue 13)."""
    conn = connections[DEFAULT_DB_ALIAS]
    conn.ensure_connection()
    conn.validate_thread_sharing()
    with conn.wrap_database_errors:
        raw = _SERVER_BINDING(conn.connection)
    return conn.make_debug_cursor(raw) if conn.queries_logged else conn.make_cursor(raw)
