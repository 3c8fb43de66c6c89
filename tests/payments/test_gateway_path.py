"""The gateway-call path under stacked faults: an unknown outcome is never guessed.

The tasks run in this process (``Task.run``, as a worker would run them; a retry request
surfaces as ``celery.exceptions.Retry``), against the sandbox gateways, the real database and
Redis. A gateway "timeout after it took the operation" is made real: the sandbox is slower
than the gateway deadline, takes the operation and answers only when the deadline has passed,
so the caller never sees its answer.
"""

from __future__ import annotations

import pytest
from celery.exceptions import Retry
from django.test import override_settings

from gateways.breaker import breaker_for
from gateways.chaos import ChaosConfig, clear_chaos, set_chaos
from gateways.sandbox.ledger import charge_count, ledger_entries
from payments.models import Payment, PaymentAttempt, Refund
from payments.services import payment_create, refund_create
from payments.tasks import payment_operation_execute, payment_process, refund_execute
from tests.conftest import WorkerFactory, make_client
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# The gateway deadline, and a sandbox slower than it: every call times out after taking effect.
SLOW = {"GATEWAY_TIMEOUT_SECONDS": 0.2}
SLOW_MS = 600


def run(task, *args: str) -> str:
    """Run a task once in this process; "retry" when it asked to be retried."""
    try:
        task.run(*args)
    except Retry:
        return "retry"
    return "done"


def open_breaker(gateway: str) -> None:
    breaker = breaker_for(gateway)
    for _ in range(50):
        breaker.record_failure()
    assert breaker.state() == "open"


def heal(gateway: str) -> None:
    breaker_for(gateway).reset()
    clear_chaos(gateway)


def new_payment(token: str = "tok_visa") -> Payment:
    merchant = make_client(gateways=["sandbox_a", "sandbox_b"], strategy="priority").merchant
    return payment_create(
        merchant=merchant,
        amount=2000,
        currency="USD",
        payment_method={"type": "card", "token": token},
        actor="test",
    )


def time_out_after_taking(gateway: str, operation: str, task, *args: str) -> None:
    """Run ``task`` once while ``gateway`` answers too late: the operation is taken by the
    abandoned call, the task sees no answer (its lookup times out too)."""
    set_chaos(gateway, ChaosConfig(added_latency_ms=SLOW_MS))
    with override_settings(**SLOW):
        assert run(task, *args) == "retry"
    wait_until(lambda: ledger_entries(gateway=gateway, operation=operation), timeout=10)


def queued_tasks() -> list[str]:
    """The names of the tasks waiting in the default queue (Celery's Redis broker)."""
    import json

    from django.conf import settings
    from django_redis import get_redis_connection

    queue = get_redis_connection("default").lrange(settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1)
    return [json.loads(message)["headers"]["task"] for message in queue]


def test_an_automatic_capture_is_sent_in_the_run_that_authorised_it() -> None:
    """No task of its own, queued behind new payments (issue 13): one run, one payment
    completed, each operation once on the gateway."""
    from django.conf import settings
    from django_redis import get_redis_connection

    payment = new_payment()
    get_redis_connection("default").delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    assert run(payment_process, payment.id) == "done"
    payment.refresh_from_db()
    attempts = PaymentAttempt.objects.filter(payment=payment).order_by("number")
    assert payment.status == "completed"
    assert [(a.operation, a.status, a.sends) for a in attempts] == [
        ("authorize", "succeeded", 1),
        ("capture", "succeeded", 1),
    ]
    assert "payments.tasks.payment_operation_execute" not in queued_tasks()
    assert charge_count(payment.id) == 1
    assert len(ledger_entries(order_reference=payment.id, operation="capture")) == 1


# Statements of one run that authorises and captures a payment here, the sandbox's own
# included (13 of them: its ledger stands in for the processor). 68 (20 the sandbox's) before
# the capture was planned in the authorisation's record, the run's repeated lookups were cut
# and the sandbox wrote its ledger rows in one statement each (issue 13); 48 before each event
# was written with its payment and its outbox row in one statement; 40 before the payment's
# lock read its merchant (and 37 before it read its risk rules) in the same query; 39 before
# each attempt's closing UPDATE went in its event's statement; 36 before an automatic capture's
# two events (captured, completed) were written with one UPDATE of the payment; 35 before the
# authorize's attempt was inserted planned, in its event's statement, and the automatic
# capture's numbered from the authorize it follows, without the attempts' counts (issue 13).
AUTOMATIC_CAPTURE_RUN_STATEMENTS = 31


def test_an_automatic_capture_is_planned_with_the_authorisation_under_one_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The capture attempt is opened and planned (maybe sent, fenced) in the transaction that
    records the authorisation, and sent under the same lock: the run takes the payment's lock
    once, and stays within its statement budget."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from payments import gateway

    taken: list[str] = []
    lock = gateway.payment_gateway_lock

    def counting_lock(payment_id: str):  # the real lock, counted
        taken.append(payment_id)
        return lock(payment_id)

    monkeypatch.setattr(gateway, "payment_gateway_lock", counting_lock)
    payment = new_payment()
    with CaptureQueriesContext(connection) as statements:
        assert run(payment_process, payment.id) == "done"
    capture = PaymentAttempt.objects.get(payment=payment, operation="capture")
    authorize = PaymentAttempt.objects.get(payment=payment, operation="authorize")
    assert taken == [payment.id]
    assert (capture.status, capture.sends, capture.fence) == ("succeeded", 1, authorize.fence)
    assert Payment.objects.get(pk=payment.id).status == "completed"
    assert len(statements) <= AUTOMATIC_CAPTURE_RUN_STATEMENTS, "\n".join(
        q["sql"][:100] for q in statements.captured_queries
    )


def test_an_automatic_capture_that_cannot_finish_in_that_run_gets_its_own_task() -> None:
    """The breaker opens right after the authorisation is recorded (at the run's "recorded"
    checkpoint, where the simulator kills workers): the capture is not sent, and its own task
    is queued to take it from there."""
    from django.conf import settings
    from django_redis import get_redis_connection

    from payments.gateway import Next, authorize_run

    payment = new_payment()
    get_redis_connection("default").delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    opened: list[str] = []

    def open_once_authorised(step: str) -> None:
        if step == "recorded" and not opened:
            opened.append(step)
            open_breaker("sandbox_a")

    step = authorize_run(payment_id=payment.id, checkpoint=open_once_authorised)
    payment.refresh_from_db()
    capture = PaymentAttempt.objects.get(payment=payment, operation="capture")
    assert (step, payment.status) == (Next.DONE, "authorized")
    assert ledger_entries(order_reference=payment.id, operation="capture") == []
    assert queued_tasks().count("payments.tasks.payment_operation_execute") == 1
    heal("sandbox_a")
    assert run(payment_operation_execute, capture.id) == "done"
    payment.refresh_from_db()
    assert payment.status == "completed"


def completed_payment() -> Payment:
    payment = new_payment()
    assert run(payment_process, payment.id) == "done"
    capture = PaymentAttempt.objects.get(payment=payment, operation="capture")
    assert run(payment_operation_execute, capture.id) == "done"
    payment.refresh_from_db()
    assert payment.status == "completed"
    return payment


def test_unknown_authorize_meeting_an_open_breaker_is_not_charged_on_another_gateway() -> None:
    payment = new_payment()
    time_out_after_taking("sandbox_a", "authorize", payment_process, payment.id)
    clear_chaos("sandbox_a")
    open_breaker("sandbox_a")
    resumed = [run(payment_process, payment.id) for _ in range(3)]
    while_open = Payment.objects.get(pk=payment.id)
    heal("sandbox_a")
    healed = run(payment_process, payment.id)
    settled = Payment.objects.get(pk=payment.id)
    assert resumed == ["retry", "retry", "retry"]
    assert while_open.status == "processing"
    assert healed == "done"
    # authorised, then captured at once in the same run (automatic capture)
    assert (settled.status, settled.gateway) == ("completed", "sandbox_a")
    assert charge_count(payment.id) == 1
    assert ledger_entries(gateway="sandbox_b") == []


@override_settings(GATEWAY_MAX_RETRIES=0)
def test_unknown_authorize_out_of_retries_never_fails_the_payment() -> None:
    payment = new_payment()
    set_chaos("sandbox_a", ChaosConfig(added_latency_ms=SLOW_MS))
    with override_settings(**SLOW):
        run(payment_process, payment.id)
    wait_until(lambda: ledger_entries(gateway="sandbox_a", operation="authorize"), timeout=10)
    clear_chaos("sandbox_a")
    open_breaker("sandbox_a")
    run(payment_process, payment.id)
    while_open = Payment.objects.get(pk=payment.id)
    heal("sandbox_a")
    run(payment_process, payment.id)
    settled = Payment.objects.get(pk=payment.id)
    assert (while_open.status, while_open.failure_code) == ("processing", "")
    assert (settled.status, settled.amount_authorized) == ("completed", 2000)
    assert charge_count(payment.id) == 1


def test_unknown_refund_meeting_an_open_breaker_is_not_failed_nor_paid_twice() -> None:
    payment = completed_payment()
    refund = refund_create(payment_id=payment.id, actor="test", amount=500)
    time_out_after_taking("sandbox_a", "refund", refund_execute, refund.id)
    clear_chaos("sandbox_a")
    open_breaker("sandbox_a")
    # The reconciler resumes it after the task's retry deadline has passed.
    with override_settings(GATEWAY_RETRY_DEADLINE_SECONDS=0):
        resumed = run(refund_execute, refund.id)
    while_open = Refund.objects.get(pk=refund.id)
    payment_while_open = Payment.objects.get(pk=payment.id)
    heal("sandbox_a")
    run(refund_execute, refund.id)
    settled = Payment.objects.get(pk=payment.id)
    paid_out = sum(e.amount for e in ledger_entries(order_reference=payment.id, operation="refund"))
    assert resumed == "done"
    assert (while_open.status, payment_while_open.status) == ("pending", "refund_initiated")
    assert Refund.objects.get(pk=refund.id).status == "succeeded"
    assert (settled.status, settled.amount_refunded) == ("partially_refunded", 500)
    assert paid_out == settled.amount_refunded == 500


def test_a_timeout_settled_by_a_lookup_still_counts_as_a_timeout_in_routing_metrics() -> None:
    from routing.metrics import read_counts, reset_metrics

    reset_metrics("sandbox_a")
    payment = new_payment(token="tok_timeout")
    outcome = run(payment_process, payment.id)
    counts = read_counts(["sandbox_a"])["sandbox_a"]
    assert outcome == "done"
    assert Payment.objects.get(pk=payment.id).status == "completed"
    assert (counts.approved, counts.errors) == (0, 1)


@pytest.mark.e2e
def test_the_reconciler_drives_a_processing_payment_whose_retry_was_lost(
    start_worker: WorkerFactory,
) -> None:
    from aegispay.celery import app as celery_app
    from payments.tasks import payments_reconcile

    payment = new_payment()
    set_chaos("sandbox_a", ChaosConfig(error_rate=1.0))
    lost = run(payment_process, payment.id)  # its retry message is never delivered
    clear_chaos("sandbox_a")
    celery_app.control.purge()  # nor is the first message, which this test ran by hand
    stalled = Payment.objects.get(pk=payment.id)
    attempts = list(stalled.attempts.values_list("status", flat=True))
    start_worker()
    with override_settings(RECONCILE_AFTER_SECONDS=0):
        payments_reconcile()
    done = wait_until(
        lambda: Payment.objects.filter(pk=payment.id, status="completed").first(), timeout=60
    )
    assert (lost, stalled.status) == ("retry", "processing")
    assert attempts == ["error"]
    assert done.gateway == "sandbox_b"
    assert charge_count(payment.id) == 1


def test_a_sender_whose_operation_was_replanned_records_nothing() -> None:
    from payments.gateway import FenceLost, authorize_plan, authorize_record, send

    payment = new_payment()
    first = authorize_plan(payment_id=payment.id, fence="first")
    answer = send(first)
    # The first sender's lock expired; a second sender re-planned the same attempt.
    second = authorize_plan(payment_id=payment.id, fence="second")
    with pytest.raises(FenceLost):
        authorize_record(plan=first, sent=answer, final=False)
    untouched = Payment.objects.get(pk=payment.id)
    authorize_record(plan=second, sent=send(second), final=False)
    recorded = Payment.objects.get(pk=payment.id)
    assert (second.reference, second.maybe_sent) == (first.reference, True)
    assert untouched.status == "processing"
    assert recorded.status == "authorized"
    assert charge_count(payment.id) == 1


@override_settings(UNRESOLVED_ATTENTION_SECONDS=0)
def test_an_unknown_operation_is_listed_for_staff_and_counted() -> None:
    from backoffice.metrics import DatabaseCollector
    from payments.selectors import unresolved_payment_ids
    from tests.payments.test_admin import login

    payment = new_payment()
    time_out_after_taking("sandbox_a", "authorize", payment_process, payment.id)
    families = {family.name: family for family in DatabaseCollector().collect()}
    staff = login("vera", "viewers")
    page = staff.get("/admin/payments/payment/?attention=unresolved").content.decode()
    assert list(unresolved_payment_ids().values_list("pk", flat=True)) == [payment.id]
    assert families["aegispay_unresolved_payments"].samples[0].value == 1
    assert payment.id in page


def test_a_warm_run_compiles_no_sql_for_its_reads() -> None:
    """The payment's lock (three times a run), the attempts' reads (three) and the sandbox's
    ledger reads (three) are compiled to SQL once per process (``common.rows.Compiled``), not
    on every run (issue 13), and so are the attempts' counts when one is opened (twice) and the
    sandbox's sums. What a run still compiles: the routing configuration, read on every plan
    while its cache is off (as in tests)."""
    from tests.common.test_rows import compilations

    assert run(payment_process, new_payment().id) == "done"  # warm: compiled here if ever
    payment = new_payment()
    with compilations() as compiled:
        assert run(payment_process, payment.id) == "done"
    assert Payment.objects.get(pk=payment.id).status == "completed"
    rows = ('SELECT "payments_payment"."id"', 'SELECT "payments_paymentattempt"."id"')
    reads = [sql for sql in compiled if sql.startswith(rows) or "FOR UPDATE" in sql]
    reads += [
        sql for sql in compiled if sql.startswith('SELECT "gateways_sandboxledgerentry"."id"')
    ]
    assert reads == [], "\n".join(reads)
    assert len(compiled) <= 2, "\n".join(compiled)


def test_a_run_kicks_the_relay_once_for_all_its_transactions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that authorises and captures commits three transactions with events (the plan,
    the authorisation, the capture); their kicks of the relay and the consumers are gathered
    and sent once as the run ends: one Redis round trip a run, not one per transaction (issue
    13). The events wait in the outbox meanwhile; the relay publishes them all."""
    from outbox import services
    from outbox.models import OutboxMessage
    from outbox.relay import outbox_relay_drain

    kicks: list[tuple[str, ...]] = []
    real_kick = services._kick

    def counting_kick(*keys: str) -> None:  # the real kick, counted
        kicks.append(keys)
        real_kick(*keys)

    payment = new_payment()
    monkeypatch.setattr(services, "_kick", counting_kick)
    assert run(payment_process, payment.id) == "done"
    assert kicks == [(services.KICK_KEY, services.CONSUMERS_KICK_KEY)]
    kicks.clear()
    assert run(payment_process, payment.id) == "done"  # nothing to do: nothing committed
    assert kicks == []
    outbox_relay_drain()
    published = OutboxMessage.objects.filter(aggregate_id=payment.id, state="published")
    assert published.count() == 5  # created, processing, authorized, captured, completed
