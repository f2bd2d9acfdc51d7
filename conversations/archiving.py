"""One archival run: find -> read -> write -> delete, one bounded batch at a time.

Safety design:
- Keys are found with SCAN and handled a batch at a time, so memory does not grow with
  the backlog.
- A batch's rows are written in one transaction; a conversation's Redis keys are removed
  only after that transaction committed, and only by a compare-and-delete that leaves the
  conversation alone if the bot wrote to it since we read it (the next run adds just the
  new messages). A crash anywhere leaves every message in Redis, in the database, or both;
  the unique message identity makes the next run skip what is already stored.
- A value that cannot be read safely is copied into the quarantine table and left in Redis.
- Runs exclude each other with a lock in Redis that expires unless renewed, so a killed
  run does not block the next one for longer than the lock's timeout.

The live mirror: the same run copies the new messages of every conversation not yet due,
and deletes nothing of them. A watermark per conversation (LiveThread: the version of its
keys the mirror copied, and its newest checkpoint's time) makes a run read only the
conversations the bot wrote to since, and of those only the checkpoints written since;
writing is the archive's own, so a message mirrored while live is never stored twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from django.db import DatabaseError, ProgrammingError, connection
from django.utils import timezone

from conversations import conf, retry, storage
from conversations.checkpoints import Candidate, Conversation, Layout, enabled_layouts
from conversations.checkpoints.base import Held, Unreadable, broken_with_value
from conversations.checkpoints.client import connect, redis_errors
from conversations.checkpoints.redisjson import decode
from conversations.exceptions import ArchiverError, RunInProgress
from conversations.health import health_document, write_health
from conversations.locking import run_lock
from conversations.models import ArchiveRun
from conversations.runs import RunReport, record_finish, record_start, write_metrics

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
        return max((finished - started for started, finished in runs.values_list("started_at", "finished_at")), default=timedelta(0))
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
                    for keys in scan_batches(client, layout, opts.batch_size):
                        batch = read_batch(client, layout, keys, opts, report, progress)
                        if batch is not None:
                            writer.submit(batch)
                        renew()
            finally:
                writer.close()
            report.scanned = True
            if opts.mirror:
                logger.info("Mirrored %d live conversations (%d new messages)", report.mirrored, report.mirrored_messages)
            if not opts.dry_run:
                _tidy_live(report)
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


def scan_batches(client: redis.Redis, layout: Layout, size: int) -> Iterator[list[str]]:
    """The layout's keys, `size` at a time, by SCAN (never KEYS)."""
    batch: list[str] = []
    seen_in_batch: set[str] = set()
    with redis_errors():
        for raw in client.scan_iter(match=layout.scan_pattern(), count=conf.scan_count()):
            key = decode(raw)
            if key is None or key in seen_in_batch or not layout.accepts(key):
                continue
            batch.append(key)
            seen_in_batch.add(key)
            if len(batch) >= size:
                yield batch
                batch, seen_in_batch = [], set()
        if batch:
            yield batch


# A run that mirrored this many conversations has the planner's statistics of live_thread
# brought up to date at its end: a run that just filled the table (the first after the mirror
# is turned on) would otherwise leave the next one to look rows up by a sequential scan until
# autovacuum's analyze comes by (measured: 100,000 unchanged conversations took 9.0 s, 5.5 s).
ANALYZE_AFTER = 1000


def _tidy_live(report: RunReport) -> None:
    try:
        retry.with_retry(lambda: storage.forget_expired(timezone.now()), "forgetting expired live conversations")
        if report.mirrored >= ANALYZE_AFTER:
            storage.analyze_live()
    except DatabaseError as exc:
        logger.error("Cannot tidy the live mirror's table: %s", exc)
        report.error(f"live conversations: {exc}")


@dataclass
class Batch:
    """What one batch found in Redis: the due conversations and (with the mirror) the live
    ones, not read yet (a writer thread reads them, so reading overlaps with storing), and the
    values the probe could not read."""

    layout: Layout
    key_count: int
    due: list[Candidate]
    broken: list[Unreadable]
    began: float
    live: list[Candidate] = field(default_factory=list)
    probed_at: datetime | None = None  # when the candidates' TTLs were read


def read_batch(
    client: redis.Redis,
    layout: Layout,
    keys: list[str],
    opts: Options,
    report: RunReport,
    progress: Callable[[str], None] | None = None,
) -> Batch | None:
    """Probe a batch of keys for the due conversations; a dry run reads and reports them
    here (and returns None)."""
    began = time.monotonic()
    with redis_errors():
        candidates, broken = layout.probe(client, keys)
    probed_at = timezone.now()
    due, live = [], []
    for candidate in candidates:
        (due if is_due(candidate, opts) else live).append(candidate)
    _mark(broken, layout)
    if not opts.dry_run:
        # Left in Redis; without the mirror, what they hold is not archived.
        report.left(live, probed_at, at_risk=not opts.mirror)
        _found(report, len(due) + sum(1 for b in broken if b.quarantine))
        return Batch(layout, len(keys), due, broken, began, live if opts.mirror else [], probed_at)
    live = live if opts.mirror else []

    live = changed(live, _live_threads(layout, live))
    with redis_errors():
        conversations, unreadable = layout.load(client, due + live) if due or live else ([], [])
    _mark(unreadable, layout)
    broken += unreadable
    mirroring = {c.key for c in live}
    archiving = [c for c in conversations if c.candidate.key not in mirroring]
    mirrored = [c for c in conversations if c.candidate.key in mirroring]
    _found(report, len(archiving) + sum(1 for b in broken if b.quarantine))
    report.messages += sum(len(c.messages) for c in archiving)
    report.quarantined += sum(1 for b in broken if b.quarantine)
    if mirrored:
        new = storage.count_new(mirrored)
        report.mirrored += len(mirrored)
        report.mirrored_messages += new
        _say(progress, f"would mirror {len(mirrored)} live conversations: {new} new messages")
    for c in archiving:
        _say(progress, f"would archive {c.conversation_id}: {len(c.messages)} messages ({c.candidate.key})")
    for b in broken:
        if b.quarantine:
            _say(progress, f"would quarantine {b.key}: {b.error}")
    return None


def _mark(broken: list[Unreadable], layout: Layout) -> None:
    for b in broken:
        b.source = b.source or layout.name
        if not b.quarantine:
            logger.warning("Skipping %s: %s", b.key, b.error)


def _found(report: RunReport, found: int) -> None:
    report.found += found
    if found:
        logger.info("Found %d expired checkpoints to archive", found)


# A live conversation is read again from a minute before the newest checkpoint the mirror
# copied: a checkpoint stored late (LangGraph's asynchronous durability) is not missed.
READ_MARGIN = timedelta(minutes=1)


def changed(live: list[Candidate], known: dict[str, storage.Mirrored]) -> list[Candidate]:
    """The live conversations the bot wrote to since the mirror last copied them, each to be
    read from just before what was copied then."""
    moved = [c for c in live if c.key not in known or known[c.key].version != c.version]
    for candidate in moved:
        mirrored = known.get(candidate.key)
        if mirrored is not None and mirrored.checkpoint_time is not None:
            candidate.read_since = mirrored.checkpoint_time - READ_MARGIN
    return moved


def _live_threads(layout: Layout, candidates: list[Candidate]) -> dict[str, storage.Mirrored]:
    if not candidates:
        return {}
    keys = [c.key for c in candidates]
    return retry.with_retry(lambda: storage.live_threads(layout.name, keys), "reading the live mirror's watermarks")


def store_batch(client: redis.Redis, batch: Batch, opts: Options, report: RunReport) -> None:
    """Read the due conversations and the live ones that changed, quarantine what cannot be
    read, write, and only then delete what was written of the due ones, and what the delete
    guard finds committed."""
    layout = batch.layout
    try:
        known = _live_threads(layout, batch.due + batch.live)
        live = changed(batch.live, known)
    except DatabaseError as exc:  # the due ones are still tried (and fail or not, as they will)
        logger.error("Cannot read the live mirror's watermarks; this batch mirrors nothing: %s", exc)
        report.error(f"live mirror: {exc}")
        known, live = {}, []
    with redis_errors():
        conversations, unreadable = layout.load(client, batch.due + live) if batch.due or live else ([], [])
    _mark(unreadable, layout)
    _quarantine(batch.broken + unreadable, opts, report)
    committed: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    mirroring = {c.key for c in live}
    since = {key: mirrored.since for key, mirrored in known.items()}
    written = _write(client, layout, conversations, opts, report, committed, Mirror(mirroring, since, first))
    mirrored = [c for c in written if c.candidate.key in mirroring]
    written = [c for c in written if c.candidate.key not in mirroring]
    if mirrored:
        report.mirrored += len(mirrored)
        _live_record(lambda: storage.keep_live(layout.name, mirrored, first, known, opts.now), "recording the live mirror", report)
    archived = deferred = 0
    refused: dict[int, str] = {}

    def guard(items: list[tuple[Conversation, Held]]) -> list[bool]:
        try:
            missing = retry.with_retry(lambda: storage.unarchived(items, committed), "checking what the keys hold")
        except DatabaseError as exc:  # cannot tell: every key stays, the next run checks again
            for conversation, _ in items:
                refused[id(conversation)] = f"the archive could not be asked: {exc}"
            return [False] * len(items)
        for (conversation, _), absent in zip(items, missing):
            if absent:
                refused[id(conversation)] = "not archived: " + ", ".join(sorted(absent)[:3])
        return [not absent for absent in missing]

    with redis_errors():
        removed = layout.delete_many(client, written, check=guard) if written else []
    for conversation, gone in zip(written, removed):
        if gone:
            archived += 1
        elif id(conversation) in refused:
            message = f"{conversation.conversation_id}: its keys stay in Redis, the delete guard refused them ({refused[id(conversation)]})"
            logger.error("Conversation %s", message)
            report.error(message)
        else:
            deferred += 1
            logger.info(
                "Conversation %s changed while it was archived; its keys stay for the next run",
                conversation.conversation_id,
            )
    report.archived += archived
    report.deferred += deferred
    _count_left(batch, unreadable, written, removed, live, mirrored, report)
    gone = [c.candidate.key for c, g in zip(written, removed) if g and c.candidate.key in known]
    if gone:
        _live_record(lambda: storage.forget_live(layout.name, gone), "recording archived conversations as no longer live", report)
    if logger.isEnabledFor(logging.DEBUG):
        _detail(written, removed, mirrored, refused)
    logger.info(
        "Batch of %d keys (%s): %d archived, %d mirrored, %d deferred, %d unreadable in %.2fs",
        batch.key_count,
        layout.name,
        archived,
        len(mirrored),
        deferred,
        sum(1 for b in batch.broken + unreadable if b.quarantine),
        time.monotonic() - batch.began,
    )


def _count_left(
    batch: Batch, unreadable: list[Unreadable], written: list[Conversation], removed: list[bool],
    live: list[Candidate], mirrored: list[Conversation], report: RunReport,
) -> None:
    """The due conversations the batch did not archive stay in Redis with messages the archive
    lacks (deferred, refused, failed), as do the changed live ones it could not mirror. A
    quarantined value is kept whole, so it is not counted as at risk."""
    at = batch.probed_at or timezone.now()
    archived = {c.candidate.key for c, gone in zip(written, removed) if gone}
    quarantined = {b.key for b in batch.broken + unreadable}
    left = [
        c for c in batch.due
        if c.key not in archived and c.key not in quarantined and c.checkpoint_key not in quarantined
    ]
    report.left(left, at, at_risk=True)
    copied = {c.candidate.key for c in mirrored}
    report.left([c for c in live if c.key not in copied], at, at_risk=True, waiting=False)


def _detail(written: list[Conversation], removed: list[bool], mirrored: list[Conversation], refused: dict[int, str]) -> None:
    """The batch's conversations, one line each (-v 2, or LOG_LEVEL=DEBUG)."""
    for conversation, gone in zip(written, removed):
        what = "archived" if gone else "kept in Redis (refused)" if id(conversation) in refused else "deferred"
        logger.debug("  %s %s: %d messages (%s)", what, conversation.conversation_id, len(conversation.messages), conversation.candidate.key)
    for conversation in mirrored:
        logger.debug("  mirrored %s: %d messages read (%s)", conversation.conversation_id, len(conversation.messages), conversation.candidate.key)


def _live_record(action: Callable[[], None], what: str, report: RunReport) -> None:
    """Bookkeeping of the live mirror, after the rows committed: if it fails, nothing is lost
    (the next run reads those conversations again and stores nothing twice); it is reported."""
    try:
        retry.with_retry(action, what)
    except DatabaseError as exc:
        logger.error("Database error while %s: %s", what, exc)
        report.error(f"{what}: {exc}")


class BatchWriter:
    """Stores batches on threads of their own (`WRITERS`, each with its own database
    connection), so reading the next batch from Redis overlaps with storing this one, and
    one batch's COPY runs in PostgreSQL while another's rows are formatted or its keys deleted.
    On two cores that took a 200,000-message run from 17.2 s (one writer) to 10.9 s.

    Safety design: each batch is stored by one thread, which deletes its keys only after its
    own transaction committed; batches hold different conversations, so the order between
    them does not matter (a conversation SCAN lists twice meets the unique key and the
    compare-and-delete, as a repeated run would). At most one batch waits while the writers
    store theirs, so memory stays bounded. Each writer counts into a report of its own,
    added to the run's at close. The first failure of a writer (anything, even SystemExit)
    stops the storing of later batches and is raised in the run's thread at the next submit
    or at close; read batches that were never stored simply stay in Redis.
    """

    def __init__(self, client: redis.Redis, opts: Options, report: RunReport, writers: int | None = None) -> None:
        self.client, self.opts, self.report = client, opts, report
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.failure: BaseException | None = None
        self.failure_lock = threading.Lock()
        self.stopped = False  # set on the first failure, never cleared
        if writers is None:  # SQLite takes one writer at a time
            writers = conf.writers() if connection.vendor == "postgresql" else 1
        self.counts = [RunReport(started_at=report.started_at, dry_run=report.dry_run) for _ in range(writers)]
        self.threads = [
            threading.Thread(target=self._work, args=(counts,), name=f"archive-writer-{i}", daemon=True)
            for i, counts in enumerate(self.counts)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, batch: Batch) -> None:
        self._raise_failure()
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for the batches handed over, add up what the writers counted, and raise a
        writer's failure, if any."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        for counts in self.counts:
            self.report.add(counts)
        self.counts = []
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def _work(self, counts: RunReport) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                if not self.stopped:
                    try:
                        store_batch(self.client, batch, self.opts, counts)
                    except BaseException as exc:  # handed to the run's thread, which decides
                        with self.failure_lock:
                            if not self.stopped:
                                self.stopped = True
                                self.failure = exc
        finally:
            connection.close()  # this thread's own database connection


@dataclass
class Mirror:
    """What `_write` needs for the live mirror: the keys of the conversations it mirrors (their
    messages are counted apart), where each known thread's life starts, and (filled in) the first
    position each conversation read has in the archive."""

    keys: set[str] = field(default_factory=set)
    since: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)


def _write(
    client: redis.Redis, layout: Layout, conversations: list[Conversation], opts: Options, report: RunReport,
    committed: dict[str, set[str]], mirror: Mirror | None = None,
) -> list[Conversation]:
    """Commit the batch's rows; return the conversations whose rows are stored, and put in
    `committed` the message keys each of them has in the archive."""
    if not conversations:
        return []
    mirror = mirror or Mirror()
    try:
        written = retry.with_retry(
            lambda: storage.write_conversations(conversations, opts.now, mirror.since), "archiving a batch"
        )
    except ProgrammingError as exc:
        raise ProgrammingError(f"{exc} (has `python manage.py migrate` been run?)") from exc
    except (DatabaseError, *retry.UNSTORABLE) as exc:
        if not retry.is_data_error(exc) or len(conversations) == 1:
            return _failed(client, conversations, exc, report, quarantine=retry.is_data_error(exc), opts=opts)
        # One conversation's rows broke the batch: write them one by one to find it.
        stored: list[Conversation] = []
        for conversation in conversations:
            stored += _write(client, layout, [conversation], opts, report, committed, mirror)
        return stored
    live = {c.conversation_id for c in conversations if c.candidate.key in mirror.keys}
    report.messages += sum(n for cid, n in written.added.items() if cid not in live)
    report.mirrored_messages += sum(n for cid, n in written.added.items() if cid in live)
    committed.update(written.keys)
    mirror.first.update(written.first)
    return conversations


def _failed(
    client: redis.Redis, conversations: list[Conversation], exc: Exception, report: RunReport, *, quarantine: bool, opts: Options
) -> list[Conversation]:
    for conversation in conversations:
        logger.error("Failed to archive %s after retry, skipping", conversation.conversation_id)
        report.error(f"{conversation.conversation_id}: {exc}")
    if quarantine:
        with redis_errors():
            broken = [
                broken_with_value(client, c.candidate.checkpoint_key, f"the database refused it: {exc}", c.source)
                for c in conversations
            ]
        _quarantine(broken, opts, report, count=False)
    return []


def _quarantine(broken: list[Unreadable], opts: Options, report: RunReport, count: bool = True) -> None:
    if not any(b.quarantine for b in broken):
        return
    try:
        new = retry.with_retry(lambda: storage.quarantine(broken, opts.now), "quarantining unreadable checkpoints")
    except DatabaseError as exc:
        for b in broken:
            logger.error("Cannot quarantine %s (%s): %s; it stays in Redis", b.key, b.error, exc)
            report.error(f"{b.key}: {b.error}")
        return
    for b in new:
        logger.error("Quarantined %s: %s", b.key, b.error)
        report.quarantined += 1
        if count:
            report.error(f"{b.key}: {b.error}")


def _say(progress: Callable[[str], None] | None, line: str) -> None:
    if progress is not None:
        progress(line)
