from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations import conf
from conversations.archiving import run_archive
from conversations.exceptions import RunInProgress
from conversations.options import Options, buffer_problem


class Command(BaseCommand):
    help = (
        "Move LangGraph conversations that are about to expire from Redis into the "
        "conversation_history table, then remove them from Redis. A conversation is due when "
        "its newest checkpoint is older than --cutoff-hours or its keys have less than "
        "--ttl-buffer-minutes left to live. Unless --no-mirror (or ARCHIVER_MIRROR_LIVE=0), the "
        "same run copies the new messages of every conversation not yet due, deleting nothing "
        "(the live mirror). Safe to run again at any time: nothing is stored twice. Meant to "
        "run from cron every ARCHIVER_SCHEDULE_MINUTES; writes the health file after every run "
        "and exits 1 when any error was counted. -v 0 logs warnings and errors only; -v 2 adds "
        "each batch's conversations to the log."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-n", "--dry-run", action="store_true", help="Report what would be archived; write and delete nothing."
        )
        parser.add_argument(
            "--cutoff-hours", type=float, default=None,
            help=f"Archive conversations whose newest checkpoint is at least this old (default {conf.cutoff_hours():g}, "
            "ARCHIVER_CUTOFF_HOURS; 0 archives every conversation now).",
        )
        parser.add_argument(
            "--ttl-buffer-minutes", type=float, default=None,
            help="Also archive conversations with less than this left to live in Redis (default: one schedule "
            f"interval + the longest recent run + {conf.ttl_margin_minutes()} minutes; a lower value is refused).",
        )
        parser.add_argument(
            "--no-mirror", action="store_true",
            help="Archive due conversations only; do not copy the new messages of live ones.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=None,
            help=f"Conversations read, written and deleted together (default {conf.batch_size()}, ARCHIVER_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        # 0 hours: every conversation is due now (draining Redis before a migration, say).
        for flag, least in (("cutoff_hours", 0), ("ttl_buffer_minutes", 1), ("batch_size", 1)):
            if opts[flag] is not None and opts[flag] < least:
                raise CommandError(f"--{flag.replace('_', '-')} must be at least {least}, not {opts[flag]:g}.")
        buffer = opts["ttl_buffer_minutes"] if opts["ttl_buffer_minutes"] is not None else conf.ttl_buffer_minutes()
        if buffer is not None and (problem := buffer_problem(buffer)):
            raise CommandError(problem)
        run_options = Options.from_settings(
            cutoff_hours=opts["cutoff_hours"],
            ttl_buffer_minutes=opts["ttl_buffer_minutes"],
            batch_size=opts["batch_size"],
            dry_run=opts["dry_run"],
            mirror=False if opts["no_mirror"] else None,
        )
        progress = self.stdout.write if opts["verbosity"] >= 2 or opts["dry_run"] else None
        try:
            with log_level(opts["verbosity"]):
                report = run_archive(run_options, progress=progress)
        except RunInProgress as exc:
            self.stderr.write(str(exc))
            return
        if report.healthy:
            self.stdout.write(report.summary())
            return
        if report.dry_run:  # the summary says nothing happened; the error is what to act on
            self.stdout.write(report.summary())
            raise CommandError(report.error_messages[0] if report.error_messages else "the dry run counted errors")
        for message in report.error_messages[:5]:
            self.stderr.write(f"  {message}")
        raise CommandError(report.summary())


@contextmanager
def log_level(verbosity: int) -> Iterator[None]:
    """-v 0: the archiver logs warnings and errors only; -v 2 and 3: also each batch's
    conversations (DEBUG); -v 1: as LOG_LEVEL says."""
    logger = logging.getLogger("conversations")
    before = logger.level
    if verbosity == 0:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    elif verbosity >= 2:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.setLevel(before)
