"""One batch of keys: read the due conversations (and, with the mirror, the live ones), store
them, and only then delete the due ones from Redis.

Safety design:
- A batch's rows are written in one transaction; a conversation's Redis keys are removed
  only after that transaction committed, and only by a compare-and-delete that leaves the
  conversation alone if the bot wrote to it since we read it (the next run adds just the
  new messages). A crash anywhere leaves every message in Redis, in the database, or both;
  the unique message identity makes the next run skip what is already stored.
- A value that cannot be read safely is copied into the quarantine table and left in Redis.
- Nothing here counts into the run's report, which writer threads storing batches at once
  would share: each function returns what it counted (runs.Counts), and store_batch adds
  its steps' counts up in the batch's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import redis
from django.db import DatabaseError, ProgrammingError
from django.utils import timezone

from conversations import retry, storage
from conversations.checkpoints import Candidate, Conversation, Layout
from conversations.checkpoints.base import Held, Unreadable, broken_with_value
from conversations.checkpoints.client import redis_errors
from conversations.live import Mirror, changed, live_record, live_threads
from conversations.options import Options, is_due
from conversations.runs import Counts

logger = logging.getLogger(__name__)


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
    progress: Callable[[str], None] | None = None,
) -> tuple[Batch | None, Counts]:
    """Probe a batch of keys for the due conversations, and count what was found; a dry run
    reads and reports them here (and returns no batch)."""
    began = time.monotonic()
    with redis_errors():
        candidates, broken = layout.probe(client, keys)
    probed_at = timezone.now()
    due: list[Candidate] = []
    live: list[Candidate] = []
    for candidate in candidates:
        (due if is_due(candidate, opts) else live).append(candidate)
    _warn_skipped(broken)
    if not opts.dry_run:
        counts = _found(len(due) + sum(1 for b in broken if b.quarantine))
        # Left in Redis; without the mirror, what they hold is not archived.
        counts.left(live, probed_at, at_risk=not opts.mirror)
        return Batch(layout, len(keys), due, broken, began, live if opts.mirror else [], probed_at), counts
    live = changed(live, live_threads(layout, live)) if opts.mirror else []
    with redis_errors():
        conversations, unreadable = layout.load(client, due + live) if due or live else ([], [])
    _warn_skipped(unreadable)
    broken += unreadable
    mirroring = {c.key for c in live}
    archiving = [c for c in conversations if c.candidate.key not in mirroring]
    mirrored = [c for c in conversations if c.candidate.key in mirroring]
    quarantined = sum(1 for b in broken if b.quarantine)
    counts = _found(len(archiving) + quarantined)
    counts.messages = sum(len(c.messages) for c in archiving)
    counts.quarantined = quarantined
    if mirrored:
        new = storage.count_new(mirrored)
        counts.mirrored, counts.mirrored_messages = len(mirrored), new
        _say(progress, f"would mirror {len(mirrored)} live conversations: {new} new messages")
    for c in archiving:
        _say(progress, f"would archive {c.conversation_id}: {len(c.messages)} messages ({c.candidate.key})")
    for b in broken:
        if b.quarantine:
            _say(progress, f"would quarantine {b.key}: {b.error}")
    return None, counts


def _warn_skipped(broken: list[Unreadable]) -> None:
    """What is not worth quarantining is said once; the rest is quarantined by _quarantine."""
    for b in broken:
        if not b.quarantine:
            logger.warning("Skipping %s: %s", b.key, b.error)


def _found(found: int) -> Counts:
    if found:
        logger.info("Found %d expired checkpoints to archive", found)
    return Counts(found=found)


def store_batch(client: redis.Redis, batch: Batch, opts: Options, counts: Counts) -> None:
    """Read the due conversations and the live ones that changed, quarantine what cannot be
    read, write, and only then delete what was written of the due ones, and what the delete
    guard finds committed. Adds what each step counted to `counts` (the batch's own) as soon
    as the step is done: when a later step fails, what was stored before is still counted."""
    layout = batch.layout
    try:
        known = live_threads(layout, batch.due + batch.live)
        live = changed(batch.live, known)
    except DatabaseError as exc:  # the due ones are still tried (and fail or not, as they will)
        logger.error("Cannot read the live mirror's watermarks; this batch mirrors nothing: %s", exc)
        counts.error(f"live mirror: {exc}")
        known, live = {}, []
    with redis_errors():
        conversations, unreadable = layout.load(client, batch.due + live) if batch.due or live else ([], [])
    _warn_skipped(unreadable)
    counts.add(_quarantine(batch.broken + unreadable, opts))
    committed: dict[str, set[str]] = {}
    first: dict[str, int] = {}
    mirroring = {c.key for c in live}
    since = {key: mirrored.since for key, mirrored in known.items()}
    written, wrote = _write(client, layout, conversations, opts, committed, Mirror(mirroring, since, first))
    counts.add(wrote)
    mirrored = [c for c in written if c.candidate.key in mirroring]
    written = [c for c in written if c.candidate.key not in mirroring]
    if mirrored:
        counts.mirrored += len(mirrored)
        counts.add(live_record(lambda: storage.keep_live(layout.name, mirrored, first, known, opts.now), "recording the live mirror"))
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
    for conversation, removed_now in zip(written, removed):
        if removed_now:
            archived += 1
        elif id(conversation) in refused:
            message = f"{conversation.conversation_id}: its keys stay in Redis, the delete guard refused them ({refused[id(conversation)]})"
            logger.error("Conversation %s", message)
            counts.error(message)
        else:
            deferred += 1
            logger.info(
                "Conversation %s changed while it was archived; its keys stay for the next run",
                conversation.conversation_id,
            )
    counts.archived += archived
    counts.deferred += deferred
    counts.add(_count_left(batch, unreadable, written, removed, live, mirrored))
    gone = [c.candidate.key for c, g in zip(written, removed) if g and c.candidate.key in known]
    if gone:
        counts.add(live_record(lambda: storage.forget_live(layout.name, gone), "recording archived conversations as no longer live"))
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
    live: list[Candidate], mirrored: list[Conversation],
) -> Counts:
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
    counts = Counts()
    counts.left(left, at, at_risk=True)
    copied = {c.candidate.key for c in mirrored}
    counts.left([c for c in live if c.key not in copied], at, at_risk=True, waiting=False)
    return counts


def _detail(written: list[Conversation], removed: list[bool], mirrored: list[Conversation], refused: dict[int, str]) -> None:
    """The batch's conversations, one line each (-v 2, or LOG_LEVEL=DEBUG)."""
    for conversation, gone in zip(written, removed):
        what = "archived" if gone else "kept in Redis (refused)" if id(conversation) in refused else "deferred"
        logger.debug("  %s %s: %d messages (%s)", what, conversation.conversation_id, len(conversation.messages), conversation.candidate.key)
    for conversation in mirrored:
        logger.debug("  mirrored %s: %d messages read (%s)", conversation.conversation_id, len(conversation.messages), conversation.candidate.key)


def _write(
    client: redis.Redis, layout: Layout, conversations: list[Conversation], opts: Options,
    committed: dict[str, set[str]], mirror: Mirror | None = None,
) -> tuple[list[Conversation], Counts]:
    """Commit the batch's rows; return the conversations whose rows are stored, with what was
    counted, and put in `committed` the message keys each of them has in the archive."""
    if not conversations:
        return [], Counts()
    mirror = mirror or Mirror()
    try:
        written = retry.with_retry(
            lambda: storage.write_conversations(conversations, opts.now, mirror.since), "archiving a batch"
        )
    except ProgrammingError as exc:
        raise ProgrammingError(f"{exc} (has `python manage.py migrate` been run?)") from exc
    except (DatabaseError, *retry.UNSTORABLE) as exc:
        if not retry.is_data_error(exc) or len(conversations) == 1:
            return [], _failed(client, conversations, exc, quarantine=retry.is_data_error(exc), opts=opts)
        # One conversation's rows broke the batch: write them one by one to find it.
        stored: list[Conversation] = []
        counts = Counts()
        for conversation in conversations:
            one, counted = _write(client, layout, [conversation], opts, committed, mirror)
            stored += one
            counts.add(counted)
        return stored, counts
    live = {c.conversation_id for c in conversations if c.candidate.key in mirror.keys}
    committed.update(written.keys)
    mirror.first.update(written.first)
    return conversations, Counts(
        messages=sum(n for cid, n in written.added.items() if cid not in live),
        mirrored_messages=sum(n for cid, n in written.added.items() if cid in live),
    )


def _failed(
    client: redis.Redis, conversations: list[Conversation], exc: Exception, *, quarantine: bool, opts: Options
) -> Counts:
    """What could not be written is counted as an error each; with `quarantine`, the value the
    database refused is quarantined (and counted as quarantined)."""
    counts = Counts()
    for conversation in conversations:
        logger.error("Failed to archive %s after retry, skipping", conversation.conversation_id)
        counts.error(f"{conversation.conversation_id}: {exc}")
    if quarantine:
        with redis_errors():
            broken = [
                broken_with_value(client, c.candidate.checkpoint_key, f"the database refused it: {exc}", c.source)
                for c in conversations
            ]
        counts.add(_quarantine(broken, opts, count=False))
    return counts


def _quarantine(broken: list[Unreadable], opts: Options, count: bool = True) -> Counts:
    """Keep the values to quarantine: each new one counts as quarantined (with `count`, as an
    error too); if the table cannot be written, each counts as an error and stays in Redis."""
    counts = Counts()
    if not any(b.quarantine for b in broken):
        return counts
    try:
        new = retry.with_retry(lambda: storage.quarantine(broken, opts.now), "quarantining unreadable checkpoints")
    except DatabaseError as exc:
        for b in broken:
            logger.error("Cannot quarantine %s (%s): %s; it stays in Redis", b.key, b.error, exc)
            counts.error(f"{b.key}: {b.error}")
        return counts
    for b in new:
        logger.error("Quarantined %s: %s", b.key, b.error)
        counts.quarantined += 1
        if count:
            counts.error(f"{b.key}: {b.error}")
    return counts


def _say(progress: Callable[[str], None] | None, line: str) -> None:
    if progress is not None:
        progress(line)
