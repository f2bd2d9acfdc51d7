"""The quarantine: checkpoint values the archiver cannot read, kept as Redis returned them, and
the text PostgreSQL can store of key names and messages.

Safety design: a value is kept whole, as Redis returned it, and never read as anything but
bytes; quarantining the same value again adds nothing (its key and digest identify it).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from django.db import transaction

from conversations.checkpoints.base import Unreadable
from conversations.models import QuarantinedCheckpoint


def quarantine(broken: list[Unreadable], now: datetime) -> list[Unreadable]:
    """Keep unreadable values; return those quarantined now for the first time."""
    keep = [b for b in broken if b.quarantine]
    if not keep:
        return []
    digests = {id(b): hashlib.sha1(b.raw_value).hexdigest() for b in keep}
    with transaction.atomic():
        present = set(
            QuarantinedCheckpoint.objects.filter(key__in={printable(b.key) for b in keep}).values_list("key", "value_sha1")
        )
        new = [b for b in keep if (printable(b.key), digests[id(b)]) not in present]
        QuarantinedCheckpoint.objects.bulk_create(
            [
                QuarantinedCheckpoint(
                    key=printable(b.key),
                    source=b.source,
                    redis_type=b.redis_type,
                    raw_value=b.raw_value,
                    value_sha1=digests[id(b)],
                    error=printable(b.error),
                    quarantined_at=now,
                )
                for b in new
            ],
            ignore_conflicts=True,
        )
    return new


def printable(text: str) -> str:
    """Text PostgreSQL can store, for key names and messages that may hold what it cannot (a
    key name that is not UTF-8, a lone surrogate, a NUL): those become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
