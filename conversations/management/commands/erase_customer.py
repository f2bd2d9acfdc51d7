from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.erasure import erase_customer
from conversations.exceptions import ArchiverError


class Command(BaseCommand):
    help = (
        "Right to erasure: remove every archived message of one customer (whole conversations, "
        "including what was said before the customer was identified), the customer's "
        "conversations still live in Redis, and quarantined values that name the customer. "
        "Reports what it removed; --dry-run only counts. Waits for a running archive run (the "
        "run lock). Exits 1 when nothing matched the id, naming the closest archived ids."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer_id", help="The exact customer_id, as stored.")
        parser.add_argument("-n", "--dry-run", action="store_true", help="Count what would be removed; remove nothing.")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            report = erase_customer(opts["customer_id"], dry_run=opts["dry_run"])
        except ArchiverError as exc:  # RetentionError among them
            raise CommandError(str(exc)) from None
        if opts["verbosity"] >= 2:
            for conversation_id in report.conversations:
                self.stdout.write(f"archived conversation {conversation_id}")
            for conversation_id in report.live_conversations:
                self.stdout.write(f"live conversation {conversation_id}")
        self.stdout.write(report.summary())
        if report.live_changed:
            raise CommandError("Some live conversations changed while being erased; run the command again.")
