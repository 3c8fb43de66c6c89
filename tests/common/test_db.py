"""common/db.py: the relay's and the consumers' claims are prepared on their connection, so
that PostgreSQL plans them once per connection instead of on every pass (issue 13)."""

from __future__ import annotations

import pytest
from django.db import connection

from outbox.consumers import outbox_consumer_pass
from outbox.registry import consumer_names
from outbox.relay import outbox_relay_pass

pytestmark = pytest.mark.django_db

# psycopg prepares a statement on its next run after this many (DB_PREPARE_THRESHOLD).
THRESHOLD = 5


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_the_claims_are_prepared_after_the_threshold() -> None:
    consumer = consumer_names()[0]
    for _ in range(THRESHOLD + 1):
        outbox_consumer_pass(consumer=consumer)
        outbox_relay_pass()
    prepared = _prepared()
    assert any("FROM outbox_outboxconsumermark c" in s for s in prepared), prepared
    assert any("FROM outbox_outboxmessage m" in s for s in prepared), prepared


def test_a_statement_run_fewer_times_is_not_prepared() -> None:
    consumer = consumer_names()[0]
    for _ in range(THRESHOLD - 1):
        outbox_consumer_pass(consumer=consumer)
    assert not any("FROM outbox_outboxconsumermark c" in s for s in _prepared())


def test_a_failed_statement_on_a_bound_cursor_raises_djangos_error_and_rolls_back() -> None:
    """The cursor is Django's: its errors are Django's, and the transaction is marked."""
    from django.db import DatabaseError, transaction

    from common.db import bound_cursor

    with pytest.raises(DatabaseError), transaction.atomic(), bound_cursor() as cursor:
        cursor.execute("SELECT 1 / %s", [0])
    with bound_cursor() as cursor:
        cursor.execute("SELECT %s::int + 1", [1])
        assert cursor.fetchone() == (2,)


def test_a_bound_cursor_is_closed_at_the_end_of_its_block() -> None:
    from common.db import bound_cursor

    with bound_cursor() as cursor:
        cursor.execute("SELECT %s::int", [1])
        assert cursor.fetchone() == (1,)
    assert cursor.cursor.closed
