"""One archival run: find -> read -> write -> delete, one bounded batch at a time.

The run scans each layout's keys (here), reads each batch (batches.py) and hands it to the
writer threads, which store it and delete what they stored from Redis (writers.py). Which
conversations are due: options.py; the live mirror's bookkeeping: live.py; what the run
counts and where it is recorded: runs.py.

Safety design:
- Keys are found with SCAN and handled a batch at a time, so memory does not grow with
  the backlog.
- Runs exclude each other with a lock in Redis that expires unless renewed, so a killed
  run does not block the next one for longer than the lock's timeout.
- Nothing is deleted from Redis before its rows committed, and what cannot be read safely
  is quarantined and left in Redis (batches.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.utils import timezone

from conversations import conf
from conversations.batches import read_batch
from conversations.checkpoints import enabled_layouts
from conversations.checkpoints.client import connect
from conversations.exceptions import ArchiverError, RunInProgress
from conversations.health import health_document, write_health
from conversations.live import tidy_live
from conversations.locking import run_lock
from conversations.options import Options
from conversations.runs import RunReport, record_finish, record_start, write_metrics
from conversations.writers import BatchWriter

logger = logging.getLogger(__name__)


def run_archive(opts: Options, progress: Callable[[str], None] | None = None) -> RunReport:
    """Archive every due conversation; always returns a report, and (unless dry) always
    records the run and writes the health file. Raises RunInProgress when another run holds the lock."""
    report = RunReport(started_at=timezone.now(), dry_run=opts.dry_run, mirror=opts.mirror)
    logger.info("Starting conversation archival run at %s", timezone.localtime(report.started_at).isoformat(timespec="seconds"))
    run = None
    try:
        client = connect()
        with run_lock(client, skip=opts.dry_run) as renew:
            run = None if opts.dry_run else record_start(report)
            writer = BatchWriter(client, opts, report)
            try:
                for layout in enabled_layouts():
                    for keys in layout.scan(client, opts.batch_size):
                        batch, counts = read_batch(client, layout, keys, opts, progress)
                        report.add(counts)
                        if batch is not None:
                            writer.submit(batch)
                        renew()
            finally:
                writer.close()
            report.scanned = True
            if opts.mirror:
                logger.info("Mirrored %d live conversations (%d new messages)", report.mirrored, report.mirrored_messages)
            if not opts.dry_run:
                report.add(tidy_live(report.mirrored))
    except RunInProgress:
        raise
    except ArchiverError as exc:  # Redis unreachable, or set up otherwise than expected
        logger.error("%s", exc)
        report.error(str(exc))
    except Exception as exc:  # the one boundary: whatever went wrong, the run is recorded as unhealthy
        logger.exception("Archival run failed: %s", exc)
        report.error(f"{type(exc).__name__}: {exc}")
    report.finished_at = timezone.now()
    logger.info("Completed archival run in %.2fs", report.duration)
    if not opts.dry_run:
        try:
            write_health(
                health_document(
                    report.started_at, report.healthy, report.archived, report.messages, report.errors,
                    mirrored=report.mirrored, mirrored_messages=report.mirrored_messages,
                )
            )
        except OSError as exc:
            logger.error("Cannot write the health file %s: %s", conf.health_file(), exc)
            report.error(f"health file: {exc}")
        record_finish(run, report)  # after the health file, so the record counts its failure too
        write_metrics()
    return report
