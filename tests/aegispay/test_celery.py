"""Correlation ids in Celery tasks (aegispay/celery.py): every task runs under the id it was
sent with, or a fresh one of its own, and leaves none behind for the next task of its worker.

The eager tests run tasks with ``task.apply()``, which goes through Celery's tracer and so
fires ``task_prerun`` and ``task_postrun`` as a worker does; the last test uses a real worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from aegispay.celery import CORRELATION_HEADER
from aegispay.celery import app as celery_app
from common.correlation import bind_correlation_id, clear_correlation_id, get_correlation_id
from payments.models import Payment, PaymentEvent
from payments.tasks import payment_process, payments_settle_captures, refund_execute
from tests.conftest import WorkerFactory, make_client
from tests.payments.helpers import payment_in
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def _no_correlation_id() -> Iterator[None]:
    """Each test starts, and leaves its thread, without a correlation id."""
    clear_correlation_id()
    yield
    clear_correlation_id()


def _captured_payment() -> Payment:
    payment = payment_in(make_client().merchant, "captured")
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Payment.objects.filter(pk=payment.pk).update(updated_at=an_hour_ago, progressed_at=an_hour_ago)
    return payment


def _settled_event(payment: Payment) -> PaymentEvent:
    return PaymentEvent.objects.get(payment=payment, type="payment.completed")


@pytest.mark.django_db
def test_a_task_leaves_no_correlation_id_behind() -> None:
    refund_execute.apply(args=("ref_missing", "corr-request-x"))
    assert get_correlation_id() == ""


@pytest.mark.django_db
def test_a_task_given_its_id_as_a_keyword_leaves_none_behind() -> None:
    refund_execute.apply(kwargs={"refund_id": "ref_missing", "correlation_id": "corr-kw"})
    assert get_correlation_id() == ""


@pytest.mark.django_db
def test_a_beat_task_after_another_task_gets_a_fresh_id_not_the_previous_one() -> None:
    """The reproduced defect: settlement stamped with another request's correlation id."""
    payment = _captured_payment()
    refund_execute.apply(args=("ref_missing", "corr-request-x"))
    payments_settle_captures.apply()
    stamped = _settled_event(payment).correlation_id
    assert stamped not in ("", "corr-request-x")
    assert get_correlation_id() == ""


@pytest.mark.django_db
def test_each_beat_run_has_its_own_id() -> None:
    first, second = _captured_payment(), _captured_payment()
    Payment.objects.filter(pk=second.pk).update(status="authorized")  # held back from run 1
    payments_settle_captures.apply()
    Payment.objects.filter(pk=second.pk).update(status="captured")
    payments_settle_captures.apply()
    ids = {_settled_event(first).correlation_id, _settled_event(second).correlation_id}
    assert len(ids) == 2
    assert "" not in ids


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_without_its_id_argument_runs_under_a_fresh_one() -> None:
    """The reconciler resumes work with ``payment_process.delay(payment_id)``: no id given.
    (Transactional, as a worker runs: no transaction is open around the gateway calls.)"""
    payment = payment_in(make_client().merchant, "initiated")
    payment_process.apply(args=(payment.id,))
    stamped = set(
        PaymentEvent.objects.filter(payment=payment, sequence__gt=1).values_list(
            "correlation_id", flat=True
        )
    )
    # authorised and, automatic capture, captured in the same run: every event under one id
    assert Payment.objects.get(pk=payment.pk).status == "completed"
    assert len(stamped) == 1
    assert "" not in stamped


@pytest.mark.django_db
def test_a_task_sent_with_an_id_in_the_header_runs_under_it() -> None:
    payment = _captured_payment()
    payments_settle_captures.apply(headers={CORRELATION_HEADER: "corr-from-header"})
    assert _settled_event(payment).correlation_id == "corr-from-header"


@pytest.mark.django_db
def test_an_eager_task_inside_a_request_gives_the_request_its_id_back() -> None:
    bind_correlation_id("corr-outer")
    refund_execute.apply(args=("ref_missing", "corr-inner"))
    assert get_correlation_id() == "corr-outer"


def test_publishing_stamps_the_current_id_on_the_message_header() -> None:
    """Work a task sends on (the reconciler resuming payments) carries the sender's id."""
    bind_correlation_id("corr-sender")
    with celery_app.connection_for_write() as conn:
        queue = "hctx-correlation-probe"
        payments_settle_captures.apply_async(connection=conn, queue=queue)
        channel = conn.default_channel
        message = wait_until(lambda: channel.basic_get(queue, no_ack=True), timeout=10)
        channel.queue_delete(queue)
    assert message.headers[CORRELATION_HEADER] == "corr-sender"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_beat_work_under_a_fresh_id_after_a_request_task(
    start_worker: WorkerFactory,
) -> None:
    """One worker process (concurrency 1): a task with id X, then the settlement beat task."""
    start_worker(concurrency=1)
    payment = _captured_payment()
    refund_execute.delay("ref_missing", "corr-request-x")
    payments_settle_captures.delay()
    wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="completed").exists())
    assert _settled_event(payment).correlation_id not in ("", "corr-request-x")


def _worker_sessions() -> set[tuple[int, object]]:
    """The other sessions on the test database (pid and start), the worker's."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return set(cursor.fetchall())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_session_from_task_to_task(
    start_worker: WorkerFactory,
) -> None:
    """Issue 13: Celery's Django fixup closed every connection around every task, so each task
    opened a PostgreSQL session of its own (2.4 a payment in make bench-lifecycle). A worker
    process keeps its session between tasks, as a gunicorn thread does between requests."""
    start_worker(concurrency=1)
    seen = []
    for _ in range(2):
        payment = _captured_payment()
        payments_settle_captures.delay()
        wait_until(lambda p=payment: Payment.objects.filter(pk=p.pk, status="completed").exists())
        seen.append(wait_until(_worker_sessions, timeout=10))
    assert seen[0] & seen[1], seen
