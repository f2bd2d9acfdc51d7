"""Writing archived conversations to the database, one transaction per batch: the new rows,
provisional rows claimed by the message they turned out to be, the archived rows brought up
to date (updates.py), and each conversation's record.

Safety design: every row has a unique identity (conversation_id, message_key), rows already
archived are skipped before insert and the insert itself ignores conflicts, so writing the
same conversation again, after a crash at any point, adds nothing. On PostgreSQL the rows go
in with COPY (copy.py), falling back to a staging table and one INSERT ... SELECT ... ON
CONFLICT DO NOTHING; elsewhere (the SQLite default) through bulk_create(ignore_conflicts=True).
Nothing here touches Redis: the caller deletes only after `write_conversations` returned,
that is after the transaction committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from django.db import connection, transaction

from conversations.checkpoints.base import Conversation
from conversations.checkpoints.history import Entry
from conversations.checkpoints.messages import Message
from conversations.models import ArchivedConversation, ConversationHistory
from conversations.storage.archived import Archived, Provisional, Stored, arrange, read_archived
from conversations.storage.copy import NewRow, copy_insert, copy_lines
from conversations.storage.updates import Change, mark_removed, move_rows, update_rows


@dataclass
class Written:
    """What a committed batch left in the archive: rows added, every message key each
    conversation now has there (what the delete guard compares), and, by the key the scan
    found each conversation by, the first position of the messages it read."""

    added: dict[str, int]
    keys: dict[str, set[str]]
    first: dict[str, int] = field(default_factory=dict)


def write_conversations(conversations: list[Conversation], now: datetime, since: dict[str, int] | None = None) -> Written:
    """Store the messages not yet archived, bring up to date the ones the bot edited or removed
    from its state since.

    `since` (the live mirror's, by the key the scan found a conversation by): from that
    position on, an archived row of the conversation's own namespace that the read no longer
    finds at all is marked removed from the bot's state. The bot dropped it and the checkpoints
    that held it are gone (a shallow saver overwrote them, or they expired), so the history
    could not say so itself."""
    since = since or {}
    with transaction.atomic():
        ids = sorted({c.conversation_id for c in conversations})
        archived = read_archived(ids)
        rows: list[NewRow] = []
        changes: list[Change] = []
        moves: list[tuple[str, str, int]] = []
        removals: list[tuple[str, str, datetime]] = []
        added = dict.fromkeys(ids, 0)
        exact = True  # whether `archived` still counts what the table holds
        for conversation in conversations:
            known = archived.setdefault(conversation.conversation_id, Archived())
            start = since.get(conversation.candidate.key)
            if start is not None:
                removals += _dropped(conversation, known, start, now)
            fresh: list[tuple[Entry, str]] = []
            for i, entry in enumerate(conversation.entries):
                digest = fingerprint(entry.message)
                stored = known.rows.get(entry.key)
                if stored is not None:
                    earlier = entry.time < stored.time  # it first appeared in a checkpoint no run could read before
                    if earlier or stored.fingerprint != digest or (stored.removed_at is None) != (entry.removed_at is None):
                        changes.append(Change(conversation.conversation_id, entry, digest))
                        exact = exact and not earlier
                    continue
                claimed = _claim(known, entry.message, conversation.entries[i - 1].key if i else None)
                if claimed is not None:
                    if _replace_provisional(conversation, claimed, entry, digest):
                        known.rows[entry.key] = Stored(claimed.position, entry.time, digest, entry.removed_at)
                        continue
                    exact = False  # changed meanwhile: insert it as any new message
                fresh.append((entry, digest))
            places, moved = arrange(known, [e.key for e in conversation.entries], {e.key for e, _ in fresh})
            for key, position in moved.items():
                moves.append((conversation.conversation_id, key, position))
                known.rows[key].position = position
            for entry, digest in fresh:
                rows.append((conversation, entry, digest, known.add(
                    entry.key, entry.time, places[entry.key], digest, entry.removed_at, entry.ns, conversation.candidate.thread_id,
                )))
                added[conversation.conversation_id] += 1
        if moves:
            move_rows(moves)
        if rows and not _insert(rows, now):
            exact = False  # some rows were there already
        if changes:
            update_rows(changes)
        if removals:
            mark_removed(removals)
        if not exact:
            archived = read_archived(ids)
        _refresh_conversations(conversations, archived, now)
    first = {}
    for conversation in conversations:
        rows_of = archived[conversation.conversation_id].rows
        positions = [rows_of[e.key].position for e in conversation.entries if e.key in rows_of]
        if positions:
            first[conversation.candidate.key] = min(positions)
    return Written(added, {cid: set(archived[cid].rows) if cid in archived else set() for cid in ids}, first)


def _dropped(conversation: Conversation, known: Archived, start: int, now: datetime) -> list[tuple[str, str, datetime]]:
    """The rows (from position `start`, of the conversation's own thread and namespace, still
    marked as in the bot's state) that the read did not find."""
    present = {e.key for e in conversation.entries}
    candidate = conversation.candidate
    at = candidate.checkpoint_time or now
    dropped = []
    for key, stored in known.rows.items():
        if (
            stored.removed_at is None and stored.position >= start and key not in present
            and stored.ns == candidate.checkpoint_ns and stored.thread_id == candidate.thread_id
        ):
            stored.removed_at = at
            dropped.append((conversation.conversation_id, key, at))
    return dropped


def fingerprint(message: Message) -> str:
    """A digest of everything stored of a message: a different one under the same identity
    means the bot edited the message in place."""
    fields = [
        message.role, message.content, message.content_blocks, message.message_id, message.name,
        message.tool_calls, message.tool_call_id, message.metadata,
    ]
    return hashlib.sha1(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _claim(known: Archived, message: Message, previous: str | None) -> Provisional | None:
    """The provisional row that `message` is, now that LangGraph applied the write that held
    it and gave it an id: same role and text, right after the message that precedes it in
    the state (or both first). A claimed row is no longer provisional."""
    if not known.provisional or not message.message_id:
        return None
    stored = None if previous is None else known.rows.get(previous)
    before = -1 if previous is None else (stored.position if stored else None)
    for row in known.provisional:
        if row.role == message.role and row.content == message.content and before == row.position - 1:
            known.provisional.remove(row)
            return row
    return None


def _replace_provisional(conversation: Conversation, row: Provisional, entry: Entry, digest: str) -> bool:
    """Give the provisional row the message's id, key and metadata; it keeps its position and
    time. False if the rows changed since they were read (another writer stored the message
    under its id, or the provisional row was purged): then the provisional row goes, and the
    caller inserts the message like any other (ON CONFLICT keeps a row already there)."""
    archived = ConversationHistory.objects.filter(conversation_id=conversation.conversation_id)
    if archived.filter(message_key=entry.key).exists():
        archived.filter(message_key=row.key).delete()
        return False
    return bool(archived.filter(message_key=row.key).update(
        message_key=entry.key,
        message_id=entry.message.message_id,
        metadata=entry.message.metadata,
        checkpoint_id=entry.checkpoint_id,
        fingerprint=digest,
        removed_at=entry.removed_at,
    ))


def _values(row: NewRow, now: datetime) -> dict[str, Any]:
    conversation, entry, digest, position = row
    message = entry.message
    candidate = conversation.candidate
    return {
        "conversation_id": conversation.conversation_id,
        "customer_id": conversation.state.customer_id,
        "timestamp": entry.time,
        "role": message.role,
        "content": message.content,
        "content_blocks": message.content_blocks,
        "message_id": message.message_id,
        "position": position,
        "name": message.name,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "metadata": message.metadata,
        "message_key": entry.key,
        "source": conversation.source,
        "thread_id": candidate.thread_id,
        "checkpoint_ns": entry.ns,
        "checkpoint_id": entry.checkpoint_id,
        "archived_at": now,
        "removed_at": entry.removed_at,
        "fingerprint": digest,
    }


def _insert(rows: list[NewRow], now: datetime) -> bool:
    """Insert the rows, skipping any already there; True if none was (every row went in)."""
    if connection.vendor == "postgresql":
        return copy_insert(copy_lines(rows, now))
    ConversationHistory.objects.bulk_create(
        [ConversationHistory(**_values(row, now)) for row in rows], ignore_conflicts=True, batch_size=500
    )
    return False  # bulk_create does not say what it skipped


def _refresh_conversations(conversations: list[Conversation], archived: dict[str, Archived], now: datetime) -> None:
    """Upsert the conversation-level facts; counts and first/last times are those of the rows
    (the archived ones were read at the start of this transaction, under the run's lock)."""
    facts = {c.conversation_id: (c.state.customer_id, c.candidate.thread_id, c.state.summary) for c in conversations}
    params: list[Any] = []
    for conversation_id, (customer_id, thread_id, summary) in facts.items():
        known = archived.get(conversation_id)
        if known is not None and known.count:
            params += [conversation_id, customer_id, thread_id, summary, known.first_at, known.last_at, known.count, now, now]
    if not params:
        return
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * (len(params) // 9))
    table = ArchivedConversation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (conversation_id, customer_id, thread_id, summary, first_message_at,
                                 last_message_at, message_count, first_archived_at, last_archived_at)
            VALUES {values}
            ON CONFLICT (conversation_id) DO UPDATE SET
                customer_id = COALESCE(EXCLUDED.customer_id, {table}.customer_id),
                thread_id = EXCLUDED.thread_id,
                summary = COALESCE(EXCLUDED.summary, {table}.summary),
                first_message_at = EXCLUDED.first_message_at,
                last_message_at = EXCLUDED.last_message_at,
                message_count = EXCLUDED.message_count,
                last_archived_at = EXCLUDED.last_archived_at
            """,
            params,
        )
