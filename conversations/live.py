"""The live mirror's bookkeeping: which live conversations changed since it copied them.

The same run that archives the due conversations copies the new messages of every
conversation not yet due, and deletes nothing of them. A watermark per conversation
(LiveThread: the version of its keys the mirror copied, and its newest checkpoint's time)
makes a run read only the conversations the bot wrote to since, and of those only the
checkpoints written since; writing is the archive's own, so a message mirrored while live is
never stored twice.

Safety design: the watermarks are recorded only after the rows they describe committed. If
recording fails, nothing is lost: the next run reads those conversations again and stores
nothing twice; the failure is counted as an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.db import DatabaseError
from django.utils import timezone

from conversations import retry, storage
from conversations.checkpoints import Candidate, Layout
from conversations.runs import Counts

logger = logging.getLogger(__name__)

# A live conversation is read again from a minute before the newest checkpoint the mirror
# copied: a checkpoint stored late (LangGraph's asynchronous durability) is not missed.
READ_MARGIN = timedelta(minutes=1)

# A run that mirrored this many conversations has the planner's statistics of live_thread
# brought up to date at its end: a run that just filled the table (the first after the mirror
# is turned on) would otherwise leave the next one to look rows up by a sequential scan until
# autovacuum's analyze comes by (docs/performance.md, The live mirror).
ANALYZE_AFTER = 1000


@dataclass
class Mirror:
    """What a batch's write needs for the live mirror: the keys of the conversations it
    mirrors (their messages are counted apart), where each known thread's life starts, and
    (filled in) the first position each conversation read has in the archive."""

    keys: set[str] = field(default_factory=set)
    since: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)


def changed(live: list[Candidate], known: dict[str, storage.Mirrored]) -> list[Candidate]:
    """The live conversations the bot wrote to since the mirror last copied them, each to be
    read from just before what was copied then."""
    moved = [c for c in live if c.key not in known or known[c.key].version != c.version]
    return [_read_since(c, known.get(c.key)) for c in moved]


def _read_since(candidate: Candidate, mirrored: storage.Mirrored | None) -> Candidate:
    if mirrored is None or mirrored.checkpoint_time is None:
        return candidate
    return replace(candidate, read_since=mirrored.checkpoint_time - READ_MARGIN)


def live_threads(layout: Layout, candidates: list[Candidate]) -> dict[str, storage.Mirrored]:
    """The mirror's watermarks of these conversations, by key."""
    if not candidates:
        return {}
    keys = [c.key for c in candidates]
    return retry.with_retry(lambda: storage.live_threads(layout.name, keys), "reading the live mirror's watermarks")


def live_record(action: Callable[[], None], what: str) -> Counts:
    """Bookkeeping of the live mirror, after the rows committed: if it fails, nothing is lost
    (the next run reads those conversations again and stores nothing twice); it is counted."""
    counts = Counts()
    try:
        retry.with_retry(action, what)
    except DatabaseError as exc:
        logger.error("Database error while %s: %s", what, exc)
        counts.error(f"{what}: {exc}")
    return counts


def tidy_live(mirrored: int) -> Counts:
    """At the end of a run that mirrored `mirrored` conversations: forget the conversations
    whose keys expired, and after a run that mirrored many, bring the planner's statistics up
    to date."""
    counts = Counts()
    try:
        retry.with_retry(lambda: storage.forget_expired(timezone.now()), "forgetting expired live conversations")
        if mirrored >= ANALYZE_AFTER:
            storage.analyze_live()
    except DatabaseError as exc:
        logger.error("Cannot tidy the live mirror's table: %s", exc)
        counts.error(f"live conversations: {exc}")
    return counts
