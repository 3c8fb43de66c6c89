"""``manage.py replay_events``: rebuild the projections from the events, report, repair.

    manage.py replay_events                          # every payment and both read models
    manage.py replay_events --payment pay_...        # one payment (and its merchant's day)
    manage.py replay_events --since 2026-01-31       # payments with an event since then
    manage.py replay_events --repair                 # fix what differs (never the events)

Each difference is printed as ``<model> <key> <field>: stored <x>, replayed <y>``; progress
every ``--progress-every`` events; at the end the events processed and the rate. Exits 1 when
differences were found and not repaired, 2 for bad arguments, 0 otherwise.

``--repair`` writes the payment row's projected fields, ``status`` and ``version`` with a
queryset ``update()`` under the payment's row lock: the one sanctioned exception to "only the
event store writes status" (``status`` is a protected FSMField; a repair restores what the
events say and must not run a transition or add an event). It holds the read models' advisory lock
while it scans, so the outbox relay's read-model updates wait for it. The work is done by
``payments.projections.verify.events_replay``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments.models import Payment
from payments.projections.verify import Difference, ReplayProgress, events_replay, parse_since

BAD_ARGUMENTS = 2
DIFFERENCES_LEFT = 1


class Command(BaseCommand):
    help = (
        "Rebuild payments and read models from the event table, print each difference, "
        "and with --repair fix the projections (never the events)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--payment", metavar="ID", help="only this payment")
        scope.add_argument(
            "--since",
            metavar="ISO-DATE-OR-DATETIME",
            help="only payments with an event at or after this time (UTC unless it says)",
        )
        parser.add_argument("--repair", action="store_true", help="fix the projections that differ")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            metavar="N",
            help="payments compared per query (events fetched per round trip: 10 N)",
        )
        parser.add_argument(
            "--progress-every",
            type=int,
            default=100_000,
            metavar="N",
            help="print progress every N events",
        )

    def handle(
        self,
        *args: Any,
        payment: str | None,
        since: str | None,
        repair: bool,
        batch_size: int,
        progress_every: int,
        **options: Any,
    ) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1", returncode=BAD_ARGUMENTS)
        if progress_every < 1:
            raise CommandError("--progress-every must be at least 1", returncode=BAD_ARGUMENTS)
        moment = None
        if since is not None:
            try:
                moment = parse_since(since)
            except ValueError as exc:
                raise CommandError(
                    f"--since: {exc} (use e.g. 2026-01-31 or 2026-01-31T12:00:00Z)",
                    returncode=BAD_ARGUMENTS,
                ) from None
        if payment is not None and not Payment.objects.filter(pk=payment).exists():
            raise CommandError(f"--payment: no such payment: {payment}", returncode=BAD_ARGUMENTS)

        def difference(found: Difference) -> None:
            self.stdout.write(str(found))

        def progress(at: ReplayProgress) -> None:
            self.stdout.write(
                f"progress: {at.events} events, {at.payments} payments, "
                f"{at.seconds:.1f}s, {at.rate:.0f} events/s"
            )

        report = events_replay(
            payment_id=payment,
            since=moment,
            repair=repair,
            batch_size=batch_size,
            on_difference=difference,
            on_progress=progress,
            progress_every=progress_every,
        )
        by_model = ", ".join(f"{model} {n}" for model, n in sorted(report.by_model.items()))
        self.stdout.write(
            f"replayed {report.events} events of {report.payments} payments in "
            f"{report.seconds:.2f}s ({report.rate:.0f} events/s); "
            f"{report.differences} differences"
            + (f" ({by_model})" if by_model else "")
            + (f", {report.repaired} repaired" if repair else "")
        )
        if report.unrepaired:
            hint = "" if repair else "; run with --repair to fix them"
            raise CommandError(
                f"{report.unrepaired} differences not repaired{hint}",
                returncode=DIFFERENCES_LEFT,
            )
