from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import conf
from conversations.exceptions import ArchiverError
from conversations.retention import DELETE_BATCH, purge


class Command(BaseCommand):
    help = (
        "Enforce the retention policy: delete archived messages older than --months calendar "
        "months (counted on the Europe/Madrid calendar), with the quarantined checkpoints, "
        "conversation records and run records of the same age. Deletes in small batches, each "
        "its own transaction, so it can be stopped and run again. With --export, every message "
        "row is first written to a JSON Lines file (gzip when the name ends in .gz) and checked; "
        "nothing is deleted if that fails (the conversation records, quarantined values and run "
        "records it deletes are not exported). Recounts the conversation records under the "
        "archiver's run lock, so it needs Redis and waits for a running archive run. Meant to "
        "run daily from cron."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--months", default=None, metavar="N",
            help=f"Keep this many calendar months (default {conf.retention_months()}, the RETENTION_MONTHS setting).",
        )
        parser.add_argument("-n", "--dry-run", action="store_true", help="Count what would go; delete nothing.")
        parser.add_argument("--export", type=Path, default=None, metavar="PATH", help="Write the message rows to PATH before deleting them.")
        parser.add_argument(
            "--batch-size", type=int, default=DELETE_BATCH, help=f"Rows per delete transaction (default {DELETE_BATCH})."
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        months = _whole_number(opts["months"] if opts["months"] is not None else conf.retention_months(), "--months")
        if opts["batch_size"] < 1:
            raise CommandError(f"--batch-size must be at least 1, not {opts['batch_size']}.")
        progress = self.stdout.write if opts["verbosity"] >= 2 else None
        try:
            report = purge(
                months, dry_run=opts["dry_run"], export=opts["export"], batch_size=opts["batch_size"], progress=progress
            )
        except ArchiverError as exc:  # RetentionError among them
            raise CommandError(str(exc)) from None
        self.stdout.write(report.summary())


def _whole_number(value: Any, flag: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise CommandError(f"{flag} must be a whole number of months, such as 6; got {value!r}.") from None
    if number < 1:
        raise CommandError(f"{flag} must be at least 1; got {number}.")
    if number > MAX_MONTHS:
        raise CommandError(f"{flag} must be at most {MAX_MONTHS} (100 years); got {number}.")
    return number


# Further back than this, the cutoff date falls before the calendar's year 1.
MAX_MONTHS = 1200
