"""What the archive already holds of the conversations a batch writes, and where newly found
messages go among those rows; also what a dry run counts and the delete guard's question.

Safety design: the writer skips the rows read here before it inserts (write.py), and the
delete guard compares what the Redis keys hold with what the committed transaction left in
the archive, never with what the run meant to write (`unarchived`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from conversations.checkpoints.base import Conversation, Held
from conversations.checkpoints.messages import PROVISIONAL_PREFIX
from conversations.models import ConversationHistory


@dataclass
class Provisional:
    """An archived row of a message read, without an id, from a write LangGraph had not applied."""

    key: str
    position: int
    role: str
    content: str


@dataclass
class Stored:
    """An archived row as the writer needs it: its place, time, fingerprint and removal time."""

    position: int
    time: datetime
    fingerprint: str
    removed_at: datetime | None
    ns: str = ""
    thread_id: str = ""


@dataclass
class Archived:
    """What the archive holds of one conversation: its rows by message key, how many, the first
    and last message times, and the provisional rows."""

    rows: dict[str, Stored] = field(default_factory=dict)
    last: int = -1
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    provisional: list[Provisional] = field(default_factory=list)

    def add(
        self, key: str, stamp: datetime, position: int, digest: str = "", removed_at: datetime | None = None,
        ns: str = "", thread_id: str = "",
    ) -> int:
        """Count a row at `position`; return it."""
        self.rows[key] = Stored(position, stamp, digest, removed_at, ns, thread_id)
        self.last = max(self.last, position)
        self.count += 1
        self.first_at = stamp if self.first_at is None else min(self.first_at, stamp)
        self.last_at = stamp if self.last_at is None else max(self.last_at, stamp)
        return position


def read_archived(conversation_ids: list[str]) -> dict[str, Archived]:
    """The conversations already in the archive, in one query (and one more, for the few
    conversations that have provisional rows)."""
    found: dict[str, Archived] = {}
    rows = ConversationHistory.objects.filter(conversation_id__in=conversation_ids).values_list(
        "conversation_id", "message_key", "position", "timestamp", "fingerprint", "removed_at", "checkpoint_ns", "thread_id"
    )
    waiting: list[str] = []
    for conversation_id, key, position, stamp, digest, removed_at, ns, thread_id in rows.iterator(chunk_size=5000):
        found.setdefault(conversation_id, Archived()).add(key, stamp, position, digest, removed_at, ns, thread_id)
        if key.startswith(PROVISIONAL_PREFIX):
            waiting.append(conversation_id)
    if waiting:
        provisional = ConversationHistory.objects.filter(
            conversation_id__in=waiting, message_key__startswith=PROVISIONAL_PREFIX
        ).values_list("conversation_id", "message_key", "position", "role", "content")
        for conversation_id, key, position, role, content in provisional:
            found[conversation_id].provisional.append(Provisional(key, position, role, content))
    return found


def arrange(known: Archived, keys: list[str], new: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Positions for the `new` keys, in the order of first appearance that `keys` (the whole
    conversation as read) gives, and the archived rows that must move to make room.

    Usually every new message comes after every archived one: they are appended, nothing
    moves. A message found later but older than archived ones (a history the previous run
    could not read, say) goes right after the message that precedes it in `keys`; the
    archived rows keep their order among themselves. When none of the archived rows is in
    `keys` (the bot started the thread over after it was archived), the new ones come last."""
    order = [k for k in keys if k in new]
    if not order:
        return {}, {}
    archived_at = [i for i, k in enumerate(keys) if k in known.rows]
    if not archived_at or keys.index(order[0]) > archived_at[-1]:
        return {k: known.last + 1 + i for i, k in enumerate(order)}, {}
    head: list[str] = []
    after: dict[str, list[str]] = {}
    current: str | None = None
    for key in keys:
        if key in known.rows:
            current = key
        elif key in new:
            (head if current is None else after.setdefault(current, [])).append(key)
    stored = sorted(known.rows, key=lambda k: known.rows[k].position)
    final = head + [k for s in stored for k in (s, *after.get(s, []))]
    position = {k: i for i, k in enumerate(final)}
    moved = {k: position[k] for k in stored if position[k] != known.rows[k].position}
    return {k: position[k] for k in order}, moved


def count_new(conversations: list[Conversation]) -> int:
    """How many of the messages read are not archived yet (what a dry run reports)."""
    archived = read_archived(sorted({c.conversation_id for c in conversations}))
    seen: set[tuple[str, str]] = set()
    for c in conversations:
        rows = archived.get(c.conversation_id, Archived()).rows
        seen.update((c.conversation_id, e.key) for e in c.entries if e.key not in rows)
    return len(seen)


def unarchived(items: list[tuple[Conversation, Held]], committed: dict[str, set[str]]) -> list[set[str]]:
    """The delete guard's question: for each conversation, which of the messages its keys hold
    (`Held`) have no committed row. `committed` is every message key each conversation has in
    the archive, as the transaction that just committed left it (Written.keys): a message
    with an id is covered by its key; one without, written "role: text", by any row of the
    same role and text, which is asked of the database. Empty sets mean the keys may go."""
    texts: dict[str, set[tuple[str, str]]] = {}
    anonymous = sorted({c.conversation_id for c, held in items if held.anonymous})
    if anonymous:
        rows = ConversationHistory.objects.filter(conversation_id__in=anonymous).values_list("conversation_id", "role", "content")
        for conversation_id, role, content in rows.iterator(chunk_size=5000):
            texts.setdefault(conversation_id, set()).add((role, content))
    missing = []
    for conversation, held in items:
        keys = committed.get(conversation.conversation_id, set())
        absent = {i for i in held.ids if "id:" + i not in keys}
        absent_texts = held.anonymous - texts.get(conversation.conversation_id, set())
        missing.append(absent | {f"{role}: {text[:40]}" for role, text in absent_texts})
    return missing
