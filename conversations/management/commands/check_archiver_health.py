"""check_archiver_health: the container's health check and a monitoring probe.

Reads only the health file (no database, no Redis, no system checks), so it answers even
when those are down, which is exactly when it has to say "unhealthy".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conversations.health import check_health, health_max_age


class Command(BaseCommand):
    help = (
        "Check the archiver's health file: exit 0 with one line when the last run is recent and "
        "healthy, exit 1 with one line giving the reason otherwise (stale or missing file, "
        "unhealthy run, errors, malformed content). Used as the container's HEALTHCHECK; safe "
        "to run from cron or a monitoring agent at any time."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-age-minutes",
            type=float,
            default=None,
            help=(
                "Fail when the last run started longer ago than this (default: the ARCHIVER setting "
                "HEALTH_MAX_AGE_MINUTES, 90). Never less than one archive interval plus 30 minutes."
            ),
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        requested = opts["max_age_minutes"]
        if requested is not None and requested <= 0:
            raise CommandError(f"--max-age-minutes must be greater than 0, not {requested:g}.")
        max_age: timedelta = health_max_age(requested)
        if requested is not None and timedelta(minutes=requested) < max_age:
            self.stderr.write(
                f"--max-age-minutes {requested:g} is less than one schedule interval + 30 minutes; "
                f"checking against {max_age.total_seconds() / 60:g} minutes instead."
            )
        verdict = check_health(max_age=max_age)
        if not verdict.healthy:
            raise CommandError(f"unhealthy: {verdict.message}")
        self.stdout.write(verdict.message)
