"""manage.py replay_events (payments/projections/verify.py): find tampered projections, repair
them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from outbox.consumers import outbox_consumer_drain
from payments.eventstore import payment_transition
from payments.models import (
    Merchant,
    MerchantDailySummary,
    Payment,
    PaymentAuditEntry,
    PaymentEvent,
)
from payments.projections.read_models import READ_MODELS_CONSUMER
from payments.projections.verify import events_replay
from tests.conftest import make_client
from tests.payments.helpers import payment_in

REPO = Path(__file__).resolve().parents[2]


def consumer_pass() -> None:
    """The read models' outbox consumer applies every event it has not applied yet."""
    outbox_consumer_drain(consumer=READ_MODELS_CONSUMER)


@dataclass
class Run:
    lines: list[str]
    error: CommandError | None


def replay(*args: str) -> Run:
    """``replay_events`` as the CLI runs it; a CommandError is its non-zero exit."""
    out = io.StringIO()
    try:
        call_command("replay_events", *args, stdout=out)
    except CommandError as exc:
        return Run(out.getvalue().splitlines(), exc)
    return Run(out.getvalue().splitlines(), None)


def events() -> list[tuple[Any, ...]]:
    return list(PaymentEvent.objects.order_by("id").values_list())


@dataclass
class World:
    merchant: Merchant
    completed: Payment
    refunded: Payment
    failed: Payment
    other: Payment


@pytest.fixture
def world(db: None) -> World:
    merchant = make_client().merchant
    other = make_client(name="Other").merchant
    built = World(
        merchant=merchant,
        completed=payment_in(merchant, "completed"),
        refunded=payment_in(merchant, "refunded"),
        failed=payment_in(merchant, "failed"),
        other=payment_in(other, "captured"),
    )
    consumer_pass()
    return built


def summary_key(payment: Payment, status: str) -> str:
    day = PaymentEvent.objects.get(payment=payment, sequence=1).created_at.date()
    return f"{payment.merchant_id}/{day.isoformat()}/{status}/{payment.currency}"


def test_a_clean_run_reports_no_differences_and_exits_zero(world: World) -> None:
    # An event the read models have not applied yet is in the payment, not yet in them.
    payment_transition(payment_id=world.other.id, transition="complete", actor="test")

    run = replay("--batch-size", "2", "--progress-every", "5")

    assert run.error is None
    assert run.lines[-1].startswith(f"replayed {PaymentEvent.objects.count()} events of 4 ")
    assert run.lines[-1].endswith("; 0 differences")
    assert "progress: 5 events" in run.lines[0]


def test_tampered_projections_are_found_and_repaired_and_events_never_change(
    world: World,
) -> None:
    before = events()
    Payment.objects.filter(pk=world.completed.pk).update(status="failed", amount_captured=10)
    MerchantDailySummary.objects.filter(
        merchant=world.merchant, status="refunded", currency="USD"
    ).update(amount_refunded=1)
    first = PaymentAuditEntry.objects.get(payment=world.failed, sequence=1)
    PaymentAuditEntry.objects.filter(pk=first.pk).update(actor="mallory")
    PaymentAuditEntry.objects.filter(payment=world.refunded, sequence=7).delete()

    found = replay()

    assert found.error is not None
    assert found.error.returncode == 1
    assert "differences not repaired; run with --repair" in str(found.error)
    assert sorted(found.lines[:2]) == sorted(
        [
            f"audit {first.event_id} actor: stored 'mallory', replayed 'test'",
            f"audit {world.refunded.events.get(sequence=7).id} row: stored None, "
            "replayed 'present'",
        ]
    )
    assert found.lines[2:-1] == [
        f"summary {summary_key(world.refunded, 'refunded')} amount_refunded: "
        "stored 1, replayed 1000",
        f"payment {world.completed.id} amount_captured: stored 10, replayed 1000",
        f"payment {world.completed.id} status: stored 'failed', replayed 'completed'",
    ]

    repaired = replay("--repair")

    assert repaired.error is None
    assert repaired.lines[:-1] == found.lines[:-1]
    assert repaired.lines[-1].endswith("5 differences (audit 2, payment 2, summary 1), 5 repaired")
    assert replay().error is None
    assert replay().lines[-1].endswith("; 0 differences")
    completed = Payment.objects.get(pk=world.completed.pk)
    assert (completed.status, completed.amount_captured, completed.version) == (
        "completed",
        1000,
        5,
    )
    assert PaymentAuditEntry.objects.get(pk=first.pk).actor == "test"
    assert events() == before


def test_read_models_rows_the_events_do_not_support_are_removed(world: World) -> None:
    stray = PaymentAuditEntry.objects.get(payment=world.failed, sequence=2)
    PaymentAuditEntry.objects.create(
        event_id="evt_stray",
        merchant_id=stray.merchant_id,
        payment_id=stray.payment_id,
        sequence=3,
        type="payment.completed",
        to_status="completed",
        actor="mallory",
        created_at=stray.created_at,
    )
    MerchantDailySummary.objects.filter(status="failed").update(status="expired")

    found = replay()
    repaired = replay("--repair")

    expired, failed = summary_key(world.failed, "expired"), summary_key(world.failed, "failed")
    assert found.lines[:-1] == [
        "audit evt_stray row: stored 'present', replayed None",
        f"summary {expired} payment_count: stored 1, replayed 0",
        f"summary {expired} amount: stored 1000, replayed 0",
        f"summary {failed} payment_count: stored 0, replayed 1",
        f"summary {failed} amount: stored 0, replayed 1000",
    ]
    assert repaired.error is None
    assert replay().lines[-1].endswith("; 0 differences")
    assert not PaymentAuditEntry.objects.filter(event_id="evt_stray").exists()
    assert not MerchantDailySummary.objects.filter(status="expired").exists()


def test_payment_restricts_the_scope_to_one_payment_and_its_merchant_day(world: World) -> None:
    Payment.objects.filter(pk__in=[world.completed.pk, world.failed.pk]).update(description="x")
    MerchantDailySummary.objects.filter(merchant_id=world.other.merchant_id).update(amount=1)

    one = replay("--payment", world.failed.id)
    other = replay("--payment", world.other.id)

    assert one.lines[:-1] == [
        f"payment {world.failed.id} description: stored 'x', replayed ''",
    ]
    # The events of every payment of that merchant and day are read, for the summary.
    assert one.lines[-1].startswith("replayed 14 events of 1 payments")
    assert other.lines[:-1] == [
        f"summary {summary_key(world.other, 'captured')} amount: stored 1, replayed 1000"
    ]
    assert one.error is not None
    assert other.error is not None


def test_since_restricts_the_scope_to_payments_with_events_since_then(world: World) -> None:
    cutoff = timezone.now()
    payment_transition(payment_id=world.other.id, transition="complete", actor="test")
    Payment.objects.filter(pk__in=[world.completed.pk, world.other.pk]).update(description="x")

    recent = replay("--since", cutoff.isoformat())
    everything = replay("--since", "2000-01-01")
    future = replay("--since", "2999-01-01T00:00:00")

    assert recent.lines[:-1] == [f"payment {world.other.id} description: stored 'x', replayed ''"]
    assert recent.lines[-1].startswith("replayed 5 events of 1 payments")
    assert len(everything.lines) == 3
    assert len(future.lines) == 1
    assert future.lines[0].startswith("replayed 0 events of 0 payments in ")
    assert future.error is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--payment", "pay_x", "--since", "2026-01-01"), "not allowed with argument"),
        (("--since", "yesterday"), "--since: not an ISO date or datetime: 'yesterday'"),
        (("--since", "2026-13-01"), "--since: not an ISO date or datetime"),
        (("--batch-size", "0"), "--batch-size must be at least 1"),
        (("--batch-size", "many"), "invalid int value: 'many'"),
        (("--payment", "pay_missing"), "--payment: no such payment: pay_missing"),
    ],
)
def test_bad_arguments_are_refused_clearly(
    world: World, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("replay_events", *args, stdout=io.StringIO())


def test_the_core_reports_events_payments_and_rate(world: World) -> None:
    seen: list[Any] = []

    report = events_replay(batch_size=1, on_progress=seen.append, progress_every=4)

    assert report.events == PaymentEvent.objects.count() == 18
    assert report.payments == 4
    assert report.differences == 0
    assert report.rate > 0
    assert [progress.events for progress in seen] == [4, 8, 12, 16]


@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_until_repaired() -> None:
    merchant = make_client().merchant
    payment = payment_in(merchant, "completed")
    consumer_pass()
    env = {**os.environ, "DATABASE_NAME": connection.settings_dict["NAME"]}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "replay_events", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    clean = run()
    Payment.objects.filter(pk=payment.pk).update(status="refunded")
    tampered = run()
    repaired = run("--repair")
    after = run()
    bad = run("--since", "soon")

    assert clean.returncode == 0, clean.stderr
    assert tampered.returncode == 1
    assert f"payment {payment.id} status: stored 'refunded', replayed 'completed'" in (
        tampered.stdout
    )
    assert "1 differences not repaired" in tampered.stderr
    assert repaired.returncode == 0
    assert after.returncode == 0
    assert after.stdout.strip().endswith("; 0 differences")
    assert bad.returncode == 2
    assert "--since: not an ISO date or datetime: 'soon'" in bad.stderr


def test_an_audit_row_with_the_wrong_time_is_replaced_by_one_with_its_events(
    world: World,
) -> None:
    """The audit trail's unique key is (event_id, created_at), its partition key: a row whose
    time is not its event's is replaced, never left beside its fix."""
    row = PaymentAuditEntry.objects.get(payment=world.failed, sequence=1)
    event = world.failed.events.get(sequence=1)
    PaymentAuditEntry.objects.filter(pk=row.pk).update(
        created_at=event.created_at - timedelta(days=40)
    )

    assert replay().lines[0].startswith(f"audit {event.id} created_at: stored ")
    assert replay("--repair").error is None

    assert list(
        PaymentAuditEntry.objects.filter(event_id=event.id).values_list("created_at", flat=True)
    ) == [event.created_at]
    assert replay().lines[-1].endswith("; 0 differences")
