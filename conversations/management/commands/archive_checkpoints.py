from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.archiving import options, run_archive
from conversations.exceptions import RunInProgress


class Command(BaseCommand):
    help = (
        "Move LangGraph conversations that are about to expire from Redis into the "
        "conversation_history table, then remove them from Redis. A conversation is due when "
        "its newest checkpoint is older than --cutoff-hours or its keys have less than "
        "--ttl-buffer-minutes left to live. Safe to run again at any time: nothing is archived "
        "twice. Meant to run hourly from cron; writes the health file after every run and exits "
        "1 when any error was counted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-n", "--dry-run", action="store_true", help="Report what would be archived; write and delete nothing."
        )
        parser.add_argument(
            "--cutoff-hours", type=float, default=None,
            help="Archive conversations whose newest checkpoint is at least this old (default 23).",
        )
        parser.add_argument(
            "--ttl-buffer-minutes", type=float, default=None,
            help="Also archive conversations with less than this left to live in Redis (default 60).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=None,
            help="Conversations read, written and deleted together (default 200).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        for flag in ("cutoff_hours", "ttl_buffer_minutes", "batch_size"):
            if opts[flag] is not None and opts[flag] <= 0:
                raise CommandError(f"--{flag.replace('_', '-')} must be greater than 0, not {opts[flag]:g}.")
        run = options(
            cutoff_hours=opts["cutoff_hours"],
            ttl_buffer_minutes=opts["ttl_buffer_minutes"],
            batch_size=opts["batch_size"],
            dry_run=opts["dry_run"],
        )
        progress = self.stdout.write if opts["verbosity"] >= 2 or opts["dry_run"] else None
        try:
            report = run_archive(run, progress=progress)
        except RunInProgress as exc:
            self.stderr.write(str(exc))
            return
        if report.healthy:
            self.stdout.write(report.summary())
            return
        for message in report.error_messages[:5]:
            self.stderr.write(f"  {message}")
        raise CommandError(report.summary())
