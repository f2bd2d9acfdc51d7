"""The one place that writes archived rows, and what the archiver asks of them.

- write.py        a batch of conversations in one transaction: new rows, provisional rows
                  claimed, each conversation's record
- updates.py      archived rows brought up to date: edited, removed, moved
- copy.py         COPY: new rows in its text format, and the insert that falls back to a
                  staging table and ON CONFLICT DO NOTHING
- archived.py     what the archive holds already, where new messages go among it, and the
                  delete guard's question
- live.py         the live mirror's watermarks
- quarantined.py  unreadable checkpoint values, kept as they were

Each module's docstring holds its safety design; this file is the package's public API.
"""

from conversations.storage.archived import Archived, arrange, count_new, unarchived
from conversations.storage.live import Mirrored, analyze_live, forget_expired, forget_live, keep_live, live_threads
from conversations.storage.quarantined import printable, quarantine
from conversations.storage.write import write_conversations

__all__ = [
    "Archived",
    "Mirrored",
    "analyze_live",
    "arrange",
    "count_new",
    "forget_expired",
    "forget_live",
    "keep_live",
    "live_threads",
    "printable",
    "quarantine",
    "unarchived",
    "write_conversations",
]
