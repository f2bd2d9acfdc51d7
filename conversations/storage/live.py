"""The live mirror's watermarks (LiveThread): what the mirror last copied of each live
conversation, so the next run copies only what changed since.

Safety design: watermarks are recorded only after the batch's rows committed (batches.py);
if recording fails, nothing is lost: the next run reads those conversations again and stores
nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection

from conversations.checkpoints.base import Conversation
from conversations.models import LiveThread
from conversations.storage.quarantined import printable


@dataclass(frozen=True)
class Mirrored:
    """What the mirror last copied of a live conversation: the version of its keys, the first
    position of the thread's current life, and its newest checkpoint's time then."""

    version: str
    since: int
    checkpoint_time: datetime | None = None


def live_threads(source: str, keys: list[str]) -> dict[str, Mirrored]:
    """The watermarks of these keys (as the scan found them), in one query."""
    names = {printable(k): k for k in keys}
    rows = LiveThread.objects.filter(source=source, key__in=list(names)).values_list(
        "key", "version", "since_position", "checkpoint_time"
    )
    return {names[key]: Mirrored(version, since, at) for key, version, since, at in rows}


def keep_live(source: str, conversations: list[Conversation], first: dict[str, int], known: dict[str, Mirrored], now: datetime) -> None:
    """Record the version mirrored of each conversation. A thread mirrored for the first time
    in this life starts at the first position its read found; later runs keep that start."""
    rows = []
    for c in conversations:
        key = c.candidate.key
        start = known[key].since if key in known else first.get(key, 0)
        ttl = c.candidate.ttl_seconds
        rows.append(LiveThread(
            source=source, key=printable(key), conversation_id=printable(c.conversation_id), version=c.candidate.version,
            since_position=start, checkpoint_time=c.candidate.checkpoint_time, mirrored_at=now,
            expires_at=None if ttl is None else now + timedelta(seconds=ttl),
        ))
    LiveThread.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["source", "key"],
        update_fields=["conversation_id", "version", "checkpoint_time", "mirrored_at", "expires_at"],
    )


def forget_live(source: str, keys: list[str]) -> None:
    """The conversations archived (their keys deleted) are no longer live."""
    LiveThread.objects.filter(source=source, key__in=[printable(k) for k in keys]).delete()


def forget_expired(now: datetime) -> int:
    """Drop the watermarks of conversations whose keys have expired since they were mirrored
    (the bot wrote nothing since: what they held is in the archive)."""
    deleted, _ = LiveThread.objects.filter(expires_at__lt=now).delete()
    return deleted


def analyze_live() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {LiveThread._meta.db_table}")
