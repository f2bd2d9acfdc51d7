"""Prometheus metrics: what operators alert on, read from the database at each scrape.

The same text is served by the web service at /metrics and written after every run to
ARCHIVER_METRICS_TEXTFILE for node_exporter's textfile collector. docs/alerts.yml has the
alert rules built on them.

- Counters are sums over the run records, so they survive restarts of every process. The
  daily purge deletes run records older than the retention period; Prometheus's rate() and
  increase() read the drop as a counter reset.
- "At risk" comes from the newest run that looked at every key: how many conversations it
  left in Redis holding messages the archive does not (only failures leave any while the
  live mirror is on), and when the first of them expires: as seconds from now (on /metrics
  this keeps falling if no run comes) and as a timestamp (what the alert compares with
  time(), so that the textfile, written only by runs, works too). +Inf when nothing is at risk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from conversations import conf
from conversations.files import hand_over
from conversations.models import ArchiveRun, ConversationHistory, QuarantinedCheckpoint

# (metric name without _total, run record field, help)
COUNTERS = [
    ("archiver_conversations_archived", "checkpoints_archived", "Conversations archived and removed from Redis."),
    ("archiver_messages_archived", "messages_archived", "Messages stored by archiving due conversations."),
    ("archiver_conversations_mirrored", "mirrored", "Live conversations whose new messages the mirror copied."),
    ("archiver_messages_mirrored", "mirrored_messages", "Messages the live mirror stored."),
    ("archiver_conversations_deferred", "deferred", "Conversations the bot wrote to while they were archived, kept for the next run."),
    ("archiver_checkpoints_quarantined", "quarantined", "Unreadable values copied into the quarantine table."),
    ("archiver_errors", "errors", "Errors counted by runs."),
]


class ArchiverCollector:
    """Reads the run records and the tables at collection time."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        finished = ArchiveRun.objects.exclude(status=ArchiveRun.Status.RUNNING)
        runs = CounterMetricFamily("archiver_runs", "Finished archive runs, by status.", labels=["status"])
        by_status = dict(finished.order_by().values("status").annotate(n=Count("id")).values_list("status", "n"))
        for status in (ArchiveRun.Status.HEALTHY, ArchiveRun.Status.UNHEALTHY):
            runs.add_metric([status.value], by_status.get(status.value, 0))
        yield runs
        totals = finished.aggregate(**{field: Sum(field) for _, field, _ in COUNTERS})
        for name, field, text in COUNTERS:
            yield CounterMetricFamily(name, text, value=totals[field] or 0)

        last = finished.order_by("-started_at").first()
        if last is not None:
            yield _gauge("archiver_last_run_timestamp_seconds", "When the newest finished run ended.", _epoch(last.finished_at or last.started_at))
            duration = ((last.finished_at or last.started_at) - last.started_at).total_seconds()
            yield _gauge("archiver_last_run_duration_seconds", "How long the newest finished run took.", duration)
            yield _gauge("archiver_last_run_success", "1 if the newest finished run counted no error, else 0.", float(last.status == ArchiveRun.Status.HEALTHY))
        success = finished.filter(status=ArchiveRun.Status.HEALTHY).order_by("-started_at").first()
        if success is not None:
            yield _gauge("archiver_last_success_timestamp_seconds", "When the newest run without errors ended.", _epoch(success.finished_at or success.started_at))

        scanned = finished.filter(waiting__isnull=False).order_by("-started_at").first()
        if scanned is not None:
            yield _gauge("archiver_redis_conversations", "Conversations the newest complete run left in Redis.", scanned.waiting or 0)
            yield _gauge("archiver_unarchived_conversations", "Of those, the ones holding messages the archive does not.", scanned.at_risk or 0)
            first = "the first conversation holding unarchived messages expires from Redis (+Inf: none)"
            yield _gauge("archiver_unarchived_expiry_seconds", f"Seconds until {first}.", _seconds_until(scanned.at_risk_expires_at, now))
            yield _gauge("archiver_unarchived_expiry_timestamp_seconds", f"When {first}.", _epoch(scanned.at_risk_expires_at))
            first = "the first conversation left in Redis expires, archived or not (+Inf: none)"
            yield _gauge("archiver_redis_next_expiry_seconds", f"Seconds until {first}.", _seconds_until(scanned.next_expiry_at, now))
            yield _gauge("archiver_redis_next_expiry_timestamp_seconds", f"When {first}.", _epoch(scanned.next_expiry_at))
        yield _gauge("archiver_quarantined_checkpoints", "Values kept in the quarantine table.", QuarantinedCheckpoint.objects.count())
        rows, size = history_table_size()
        yield _gauge("archiver_history_rows_estimated", "Rows in conversation_history (the planner's estimate on PostgreSQL).", rows)
        if size is not None:
            yield _gauge("archiver_history_table_bytes", "conversation_history on disk, with its indexes and TOAST.", size)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _epoch(moment: datetime | None) -> float:
    return math.inf if moment is None else moment.timestamp()


def _seconds_until(moment: datetime | None, now: datetime) -> float:
    return math.inf if moment is None else (moment - now).total_seconds()


def history_table_size() -> tuple[float, float | None]:
    """The row count (PostgreSQL: the planner's estimate, which costs nothing at any size) and
    the bytes on disk (PostgreSQL only)."""
    table = ConversationHistory._meta.db_table
    if connection.vendor != "postgresql":
        return ConversationHistory.objects.count(), None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples, pg_total_relation_size(oid) FROM pg_class WHERE oid = %s::regclass", [table])
        estimate, size = cursor.fetchone()
    if estimate < 0:  # never analyzed yet (a new table): count it
        estimate = ConversationHistory.objects.count()
    return estimate, size


def registry() -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(ArchiverCollector())
    return found


def exposition() -> bytes:
    """The metrics in Prometheus's text format."""
    return generate_latest(registry())


def write_textfile() -> Path | None:
    """Write the metrics for node_exporter (atomically: a temporary file, then a rename);
    None when ARCHIVER_METRICS_TEXTFILE is empty."""
    path = conf.metrics_textfile()
    if not path:
        return None
    write_to_textfile(str(path), registry())
    hand_over(Path(path))
    return Path(path)
