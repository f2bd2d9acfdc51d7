"""The run record: what a run and each of its batches count, and where it is kept.

Every run (dry runs excepted) is recorded in `archive_run` when it starts and when it ends,
after the health file (so the record counts that file's failure too) and before the metrics
textfile (so the file's counters include the run). A run still marked running when the next
one starts was killed; the next one marks it unhealthy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, ProgrammingError, connection
from django.utils import timezone

from conversations import conf, metrics, storage
from conversations.checkpoints import Candidate
from conversations.models import ArchiveRun

logger = logging.getLogger(__name__)

# At most this many error messages are kept on the run record.
MAX_RECORDED_ERRORS = 50


@dataclass
class Counts:
    """What one batch counted, or (added up with `add`) a whole run. A batch's functions
    return theirs, so writer threads share no report: the run adds up what each batch counted."""

    found: int = 0
    archived: int = 0
    messages: int = 0
    deferred: int = 0
    quarantined: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    mirrored: int = 0  # live conversations whose new messages were copied
    mirrored_messages: int = 0
    # What the run leaves in Redis.
    waiting: int = 0
    at_risk: int = 0  # of those, with messages the archive does not hold
    at_risk_expires_at: datetime | None = None
    next_expiry_at: datetime | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_messages) < MAX_RECORDED_ERRORS:
            self.error_messages.append(storage.printable(message))

    def add(self, other: Counts) -> None:
        """Count in what another part of the run (a batch) counted."""
        self.found += other.found
        self.archived += other.archived
        self.messages += other.messages
        self.deferred += other.deferred
        self.quarantined += other.quarantined
        self.mirrored += other.mirrored
        self.mirrored_messages += other.mirrored_messages
        self.errors += other.errors
        self.error_messages += other.error_messages[: MAX_RECORDED_ERRORS - len(self.error_messages)]
        self.waiting += other.waiting
        self.at_risk += other.at_risk
        self.at_risk_expires_at = _earliest(self.at_risk_expires_at, other.at_risk_expires_at)
        self.next_expiry_at = _earliest(self.next_expiry_at, other.next_expiry_at)

    def left(self, candidates: list[Candidate], at: datetime, *, at_risk: bool, waiting: bool = True) -> None:
        """Count conversations the run leaves in Redis (`waiting`), and those of them holding
        messages the archive does not (`at_risk`), with when the first of each expires; `at`
        is when their TTLs were read."""
        expiries = [at + timedelta(seconds=c.ttl_seconds) for c in candidates if c.ttl_seconds is not None]
        first = min(expiries, default=None)
        if waiting:
            self.waiting += len(candidates)
            self.next_expiry_at = _earliest(self.next_expiry_at, first)
        if at_risk:
            self.at_risk += len(candidates)
            self.at_risk_expires_at = _earliest(self.at_risk_expires_at, first)


@dataclass(kw_only=True)
class RunReport(Counts):
    """A run's counts, with when and how it ran."""

    started_at: datetime
    dry_run: bool = False
    finished_at: datetime | None = None
    mirror: bool = False
    scanned: bool = False  # once it looked at every key: what it leaves in Redis is then known

    @property
    def healthy(self) -> bool:
        return self.errors == 0

    @property
    def duration(self) -> float:
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"Dry run: would archive {self.found} conversations ({self.messages} messages){self._mirror_part('would mirror')}; "
                f"{self.quarantined} unreadable; nothing was written or deleted."
            )
        return (
            f"Archived {self.archived} conversations ({self.messages} messages){self._mirror_part('mirrored')} "
            f"in {self.duration:.2f}s; {self.deferred} deferred, {self.quarantined} quarantined, {self.errors} errors."
        )

    def _mirror_part(self, verb: str) -> str:
        if not self.mirror:
            return ""
        return f" and {verb} {self.mirrored} live conversations ({self.mirrored_messages} new messages)"


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def record_start(report: RunReport) -> ArchiveRun | None:
    try:
        # We hold the lock, so a run still marked running was killed before it could finish.
        ArchiveRun.objects.filter(status=ArchiveRun.Status.RUNNING).update(
            status=ArchiveRun.Status.UNHEALTHY, error_messages="The run ended without finishing (killed or crashed)."
        )
        return ArchiveRun.objects.create(started_at=report.started_at)
    except ProgrammingError as exc:
        raise ProgrammingError(f"{exc} (has `python manage.py migrate` been run?)") from exc
    except DatabaseError as exc:
        logger.error("Cannot record the run in the database: %s", exc)
        return None


def record_finish(run: ArchiveRun | None, report: RunReport) -> None:
    fields = dict(
        finished_at=report.finished_at,
        status=ArchiveRun.Status.HEALTHY if report.healthy else ArchiveRun.Status.UNHEALTHY,
        checkpoints_found=report.found,
        checkpoints_archived=report.archived,
        messages_archived=report.messages,
        deferred=report.deferred,
        quarantined=report.quarantined,
        mirrored=report.mirrored,
        mirrored_messages=report.mirrored_messages,
        errors=report.errors,
        error_messages="\n".join(report.error_messages),
    )
    if report.scanned:
        fields.update(
            waiting=report.waiting, at_risk=report.at_risk,
            at_risk_expires_at=report.at_risk_expires_at, next_expiry_at=report.next_expiry_at,
        )
    try:
        connection.close_if_unusable_or_obsolete()
        if run is None:
            ArchiveRun.objects.create(started_at=report.started_at, **fields)
        else:
            ArchiveRun.objects.filter(pk=run.pk).update(**fields)
    except DatabaseError as exc:
        logger.error("Cannot record the run in the database: %s", exc)


def write_metrics() -> None:
    """After the run record: the textfile's counters include this run. A failure is logged and
    not counted (the run is recorded already); the file's last-run time then goes stale,
    which is what the alerts watch."""
    try:
        metrics.write_textfile()
    except (OSError, DatabaseError) as exc:
        logger.error("Cannot write the metrics file %s: %s", conf.metrics_textfile(), exc)
