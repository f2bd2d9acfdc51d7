"""What a run is told, and which conversations it archives.

A conversation is due when its newest checkpoint is past the cutoff, or when its keys have
less left to live in Redis than the TTL buffer. Safety design: the buffer is one schedule
interval, the longest recent run and a margin, so a conversation that is not due now
outlives the next run; a buffer set lower than that is refused (`buffer_problem`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone

from conversations import conf
from conversations.checkpoints import Candidate
from conversations.models import ArchiveRun

logger = logging.getLogger(__name__)


@dataclass
class Options:
    now: datetime
    cutoff: timedelta
    ttl_buffer: timedelta
    batch_size: int
    dry_run: bool = False
    mirror: bool = False

    @classmethod
    def from_settings(
        cls,
        *,
        now: datetime | None = None,
        cutoff_hours: float | None = None,
        ttl_buffer_minutes: float | None = None,
        batch_size: int | None = None,
        dry_run: bool = False,
        mirror: bool | None = None,
    ) -> Options:
        """The run's options: the settings, with what the command line gave in their place."""
        if ttl_buffer_minutes is None:
            ttl_buffer_minutes = conf.ttl_buffer_minutes()
        return cls(
            now=now or timezone.now(),
            cutoff=timedelta(hours=conf.cutoff_hours() if cutoff_hours is None else cutoff_hours),
            ttl_buffer=required_buffer() if ttl_buffer_minutes is None else timedelta(minutes=ttl_buffer_minutes),
            batch_size=batch_size or conf.batch_size(),
            dry_run=dry_run,
            mirror=conf.mirror_live() if mirror is None else mirror,
        )


# How many of the latest runs the TTL buffer allows for.
RECENT_RUNS = 24


def longest_recent_run() -> timedelta:
    """The longest of the latest finished runs (none recorded, or no database: zero)."""
    try:
        runs = ArchiveRun.objects.filter(finished_at__isnull=False).order_by("-started_at")[:RECENT_RUNS]
        times = runs.values_list("started_at", "finished_at")
        return max((finished - started for started, finished in times if finished is not None), default=timedelta(0))
    except DatabaseError as exc:
        logger.warning("Cannot read the run records for the TTL buffer: %s", exc)
        return timedelta(0)


def required_buffer(longest: timedelta | None = None) -> timedelta:
    """What a conversation's keys must have left to outlive the next run: one schedule interval,
    the longest recent run (read from the run records unless given), and a margin. A
    conversation with less left is due now."""
    longest = longest_recent_run() if longest is None else longest
    return timedelta(minutes=conf.schedule_minutes() + conf.ttl_margin_minutes()) + longest


def buffer_problem(minutes: float) -> str | None:
    """Why a TTL buffer of `minutes` would let conversations expire between two runs, or None."""
    longest_run = longest_recent_run()
    required = required_buffer(longest_run)
    if timedelta(minutes=minutes) >= required:
        return None
    longest = longest_run.total_seconds() / 60
    return (
        f"A TTL buffer of {minutes:g} minutes lets conversations expire between two runs: it must be at least "
        f"{required.total_seconds() / 60:.1f} (the {conf.schedule_minutes()}-minute schedule + the longest recent "
        f"run, {longest:.1f} + a {conf.ttl_margin_minutes()}-minute margin). Raise it, or unset "
        "ARCHIVER_TTL_BUFFER_MINUTES to have it derived."
    )


def is_due(candidate: Candidate, opts: Options) -> bool:
    """Archive when the newest checkpoint is past the cutoff, or the keys are about to expire."""
    if candidate.checkpoint_time is not None and opts.now - candidate.checkpoint_time >= opts.cutoff:
        return True
    return candidate.ttl_seconds is not None and candidate.ttl_seconds < opts.ttl_buffer.total_seconds()

