"""Retention: what leaves the archive with age, and how (erasure.py erases one customer).

Safety design:
- The cutoff is computed once (N calendar months before now, on Europe/Madrid's calendar)
  and the same value is used for counting, exporting and deleting.
- Deletes go in bounded batches, each its own short transaction, so a purge of millions of
  rows never holds long locks, and can be stopped and simply run again.
- With an export, every row is written to the file, the file is read back and counted, and
  only then are rows deleted: exactly the ids read back from the file, and only while they
  are still older than the cutoff. If the export fails, nothing is deleted.
- An archive run writes a batch's messages and their conversation records in one transaction.
  The purge recounts the records it touched under the run lock, after deleting the messages,
  so a run that stored a conversation meanwhile cannot leave its record counting rows that
  are gone (conversations/locking.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from itertools import islice
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, Max, Min, OuterRef
from django.utils import timezone

from conversations.checkpoints.client import connect, redis_errors
from conversations.exceptions import RetentionError
from conversations.export import check_writable, export_rows, exported_ids
from conversations.locking import PURGE, run_lock
from conversations.models import (
    ArchivedConversation,
    ArchiveRun,
    ConversationHistory,
    QuarantinedCheckpoint,
)

logger = logging.getLogger(__name__)

DELETE_BATCH = 5000
RECOUNT_BATCH = 500


def months_before(moment: datetime, months: int) -> datetime:
    """The same wall-clock time `months` calendar months earlier in the project's time zone
    (the day clamped to the month's length: 31 August - 6 months = 28 or 29 February)."""
    local = timezone.localtime(moment)
    index = local.year * 12 + (local.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    next_month = datetime(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - datetime(year, month, 1)).days
    naive = local.replace(tzinfo=None).replace(year=year, month=month, day=min(local.day, last_day))
    # A wall time the DST change skipped (02:30 on the last Sunday of March) is read with the
    # offset before the change; converting to UTC makes it an ordinary instant (PEP 495 makes
    # gap times compare unequal to everything).
    return timezone.make_aware(naive, timezone.get_current_timezone()).astimezone(dt_timezone.utc)


@dataclass
class PurgeReport:
    cutoff: datetime
    dry_run: bool = False
    messages: int = 0
    conversations: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    quarantined: int = 0
    conversation_records: int = 0
    runs: int = 0
    exported_to: Path | None = None
    batches: int = 0
    longest_batch_s: float = 0.0

    def timed_batch(self, seconds: float) -> None:
        self.batches += 1
        self.longest_batch_s = max(self.longest_batch_s, seconds)

    def summary(self) -> str:
        verb = "Would delete" if self.dry_run else "Deleted"
        text = (
            f"{verb} {self.messages} messages of {self.conversations} conversations older than "
            f"{timezone.localtime(self.cutoff).isoformat(timespec='seconds')}"
        )
        if self.messages:
            text += (
                f" (from {timezone.localtime(self.oldest).isoformat(timespec='seconds')}"
                f" to {timezone.localtime(self.newest).isoformat(timespec='seconds')})"
            )
        text += (
            f", {self.conversation_records} conversation records, {self.quarantined} quarantined checkpoints "
            f"and {self.runs} run records"
        )
        if self.exported_to:
            text += f"; exported to {self.exported_to}"
        if self.batches:
            text += f"; {self.batches} delete transactions, the longest {self.longest_batch_s:.2f}s"
        return text + "."


def purge(
    months: int,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    export: Path | None = None,
    batch_size: int = DELETE_BATCH,
    progress: Callable[[str], None] | None = None,
) -> PurgeReport:
    if months < 1:
        raise RetentionError(f"--months must be a whole number of at least 1, not {months}.")
    cutoff = months_before(now or timezone.now(), months)
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    old = ConversationHistory.objects.filter(timestamp__lt=cutoff)
    stats = old.aggregate(n=Count("id"), conversations=Count("conversation_id", distinct=True), oldest=Min("timestamp"), newest=Max("timestamp"))
    report.messages, report.conversations = stats["n"], stats["conversations"]
    report.oldest, report.newest = stats["oldest"], stats["newest"]
    if export is not None:
        check_writable(export)
    if not dry_run:
        client = connect()
        with redis_errors():  # the lock comes later; a Redis that is down stops the purge before it deletes
            client.ping()
    if dry_run:
        report.conversation_records = ArchivedConversation.objects.filter(last_message_at__lt=cutoff).count()
        report.quarantined = QuarantinedCheckpoint.objects.filter(quarantined_at__lt=cutoff).count()
        report.runs = ArchiveRun.objects.filter(started_at__lt=cutoff).count()
        return report

    if export is not None:
        exported = export_rows(cutoff, export)
        report.exported_to = export
        report.messages = _delete_exported(export, cutoff, batch_size, progress, report)
        if report.messages != exported:
            logger.warning("%d exported rows were no longer there to delete", exported - report.messages)
    else:
        report.messages = delete_in_batches(
            ConversationHistory.objects.filter(timestamp__lt=cutoff), batch_size, progress, "messages", report
        )
    with run_lock(client, PURGE) as renew:
        report.conversation_records = _refresh_conversation_records(cutoff, report, renew)
    report.quarantined = delete_in_batches(
        QuarantinedCheckpoint.objects.filter(quarantined_at__lt=cutoff), batch_size, progress, "quarantined checkpoints", report
    )
    report.runs = delete_in_batches(
        ArchiveRun.objects.filter(started_at__lt=cutoff), batch_size, progress, "run records", report
    )
    logger.info("%s", report.summary())
    return report


def delete_in_batches(
    queryset: Any,
    batch_size: int,
    progress: Callable[[str], None] | None,
    what: str,
    report: PurgeReport | None = None,
) -> int:
    """Delete what the queryset selects, `batch_size` rows per transaction, until none is left."""
    total = 0
    model = queryset.model
    while True:
        began = time.monotonic()
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True)[:batch_size])
            if not ids:
                return total
            deleted, _ = model.objects.filter(pk__in=ids).delete()
        if report is not None:
            report.timed_batch(time.monotonic() - began)
        total += deleted
        if progress:
            progress(f"deleted {total} {what}")


def _refresh_conversation_records(cutoff: datetime, report: PurgeReport, renew: Callable[[], None]) -> int:
    """Drop the records of conversations with no message left; recount the partly purged ones."""
    gone = ArchivedConversation.objects.filter(last_message_at__lt=cutoff)
    deleted = delete_in_batches(gone, DELETE_BATCH, lambda _: renew(), "conversation records", report)
    partial = ArchivedConversation.objects.filter(first_message_at__lt=cutoff).values_list("conversation_id", flat=True)
    conversation_ids = partial.iterator()
    while batch := list(islice(conversation_ids, RECOUNT_BATCH)):
        deleted += _recount(batch)
        renew()
    return deleted


def _recount(conversation_ids: list[str]) -> int:
    """Give these conversations' records the count and first and last times of the rows they
    have left, in one UPDATE, and drop the records of those with none; the number dropped."""
    records, history = ArchivedConversation._meta.db_table, ConversationHistory._meta.db_table
    marks = ", ".join(["%s"] * len(conversation_ids))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {records} AS c SET message_count = h.n, first_message_at = h.first_at, last_message_at = h.last_at "
            "FROM (SELECT conversation_id, COUNT(id) AS n, MIN(timestamp) AS first_at, MAX(timestamp) AS last_at "
            f"FROM {history} WHERE conversation_id IN ({marks}) GROUP BY conversation_id) AS h "
            "WHERE c.conversation_id = h.conversation_id",
            conversation_ids,
        )
        left = ConversationHistory.objects.filter(conversation_id=OuterRef("conversation_id"))
        return ArchivedConversation.objects.filter(~Exists(left), conversation_id__in=conversation_ids).delete()[0]


# --- export -------------------------------------------------------------------------------


def _delete_exported(
    path: Path, cutoff: datetime, batch_size: int, progress: Callable[[str], None] | None, report: PurgeReport
) -> int:
    total = 0
    batch: list[int] = []
    for row_id in exported_ids(path, path.name.endswith(".gz")):
        batch.append(row_id)
        if len(batch) >= batch_size:
            total += _delete_ids(batch, cutoff, report)
            batch = []
            if progress:
                progress(f"deleted {total} messages")
    if batch:
        total += _delete_ids(batch, cutoff, report)
    return total


def _delete_ids(ids: list[int], cutoff: datetime, report: PurgeReport) -> int:
    began = time.monotonic()
    with transaction.atomic():
        deleted = ConversationHistory.objects.filter(pk__in=ids, timestamp__lt=cutoff).delete()[0]
    report.timed_batch(time.monotonic() - began)
    return deleted
