"""common/rows.py's ``Compiled``: a hot query compiled to SQL once per process, whose instances
are those the queryset would build (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from common.rows import Compiled
from payments.merchants import merchant_create
from payments.models import Merchant, Payment, RiskRules
from tests.payments.helpers import payment_in

pytestmark = pytest.mark.django_db

LOCK: Compiled[Payment] = Compiled(
    lambda pk: (
        Payment.objects.locked().select_related("merchant", "merchant__risk_rules").filter(pk=pk)
    )
)
BY_MERCHANT: Compiled[Payment] = Compiled(
    lambda merchant_id: Payment.objects.filter(merchant_id=merchant_id).order_by("id")
)


@contextmanager
def compilations() -> Iterator[list[str]]:
    """Every SELECT Django compiles to SQL meanwhile, on this thread."""
    seen: list[str] = []
    original = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        sql, params = original(self, *args, **kwargs)
        seen.append(sql)
        return sql, params

    SQLCompiler.as_sql = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        SQLCompiler.as_sql = original  # type: ignore[method-assign]


def shop(name: str = "Rows") -> Merchant:
    return merchant_create(name=name)[0]


def fields_of(obj: Any) -> dict[str, Any]:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_the_instances_are_the_querysets_with_their_related_objects() -> None:
    merchant = shop()
    RiskRules.objects.create(merchant=merchant, blocked_countries=["KP"])
    payment = payment_in(merchant, "authorized", metadata={"order": "o-1"})
    with transaction.atomic():
        expected = (
            Payment.objects.locked()
            .select_related("merchant", "merchant__risk_rules")
            .get(pk=payment.pk)
        )
        got = LOCK.get(payment.pk)
        with CaptureQueriesContext(connection) as queries:
            assert fields_of(got) == fields_of(expected)
            assert fields_of(got.merchant) == fields_of(expected.merchant)
            assert got.merchant.risk_rules.blocked_countries == ["KP"]  # a JSON field, decoded
            assert got.metadata == {"order": "o-1"}
        assert len(queries) == 0  # the related objects came with the row
    assert got._state.adding is False and got._state.db == "default"


def test_a_missing_reverse_one_to_one_is_cached_as_missing() -> None:
    payment = payment_in(shop(), "initiated")
    with transaction.atomic():
        got = LOCK.get(payment.pk)
        with CaptureQueriesContext(connection) as queries:
            assert not hasattr(got.merchant, "risk_rules")
        assert len(queries) == 0


def test_the_sql_is_compiled_once_and_the_arguments_change() -> None:
    first, second = shop("One"), shop("Two")
    mine = [payment_in(first, "initiated").pk for _ in range(2)]
    theirs = payment_in(second, "initiated").pk
    BY_MERCHANT.fetch(first.pk)  # compiled here, if no test did before
    with compilations() as compiled:
        assert [p.pk for p in BY_MERCHANT.fetch(first.pk)] == sorted(mine)
        assert [p.pk for p in BY_MERCHANT.fetch(second.pk)] == [theirs]
        assert BY_MERCHANT.fetch("mer_none") == []
    assert compiled == []


def test_get_raises_as_the_queryset_does() -> None:
    with transaction.atomic(), pytest.raises(Payment.DoesNotExist):
        LOCK.get("pay_missing")
    merchant = shop()
    payment_in(merchant, "initiated"), payment_in(merchant, "initiated")
    with pytest.raises(Payment.MultipleObjectsReturned):
        BY_MERCHANT.get(merchant.pk)


@pytest.mark.django_db(transaction=True)  # a test's own transaction would hide the rule
def test_a_locking_query_outside_a_transaction_raises_as_the_queryset_does() -> None:
    payment = payment_in(shop(), "initiated")
    with transaction.atomic():
        LOCK.get(payment.pk)  # compiled, if no test did before
    with pytest.raises(TransactionManagementError):
        LOCK.get(payment.pk)


def test_an_argument_a_lookup_rewrites_is_refused_when_compiled() -> None:
    contains: Compiled[Merchant] = Compiled(
        lambda part: Merchant.objects.filter(name__contains=part)
    )
    with pytest.raises(ValueError, match="is not one parameter"):
        contains.fetch("Rows")


def test_the_wrong_number_of_arguments_is_refused() -> None:
    BY_MERCHANT.fetch("mer_none")
    with pytest.raises(TypeError, match="takes 1 arguments, not 2"):
        BY_MERCHANT.fetch("mer_none", "extra")


def test_a_values_query_gives_its_converted_rows() -> None:
    from django.db.models import Count, Max

    counts: Compiled[Payment] = Compiled(
        lambda merchant_id: (
            Payment.objects.filter(merchant_id=merchant_id)
            .order_by()
            .values("merchant_id")
            .annotate(most=Max("amount"), n=Count("pk"))
            .values_list("most", "n")
        )
    )
    methods: Compiled[Payment] = Compiled(
        lambda pk: Payment.objects.filter(pk=pk).values_list("payment_method", "metadata")
    )
    merchant = shop()
    payment = payment_in(merchant, "initiated", metadata={"k": "v"})
    payment_in(merchant, "initiated")
    assert counts.rows(merchant.pk) == [(1000, 2)]
    assert counts.rows("mer_none") == []
    assert methods.rows(payment.pk) == [(payment.payment_method, {"k": "v"})]  # JSON decoded
    with pytest.raises(TypeError, match="rows"):
        methods.fetch(payment.pk)
    with pytest.raises(TypeError, match="fetch"):
        LOCK.rows(payment.pk)


def test_compiled_queries_and_row_statements_are_prepared_after_the_threshold() -> None:
    """They run on ``bound_cursor`` (common/db.py): one text each, so psycopg prepares them
    after ``DB_PREPARE_THRESHOLD`` runs on a connection and PostgreSQL stops planning them. A
    ``bench-lifecycle`` run spent a fifth less of PostgreSQL's CPU a payment with the
    gateway path's reads and writes prepared (issue 13)."""
    from common.rows import execute, update_statement
    from tests.common.test_db import THRESHOLD, _prepared

    payment = payment_in(shop(), "initiated")
    for _ in range(THRESHOLD + 1):
        with transaction.atomic():
            locked = LOCK.get(payment.pk)
            execute(update_statement(locked.merchant))
    prepared = _prepared()
    assert any(s.endswith('FOR UPDATE OF "payments_payment"') for s in prepared), prepared
    assert any(s.startswith('UPDATE "payments_merchant" SET') for s in prepared), prepared
