"""Writing archived conversations to the database, one transaction per batch.

Safety design: every row has a unique identity (conversation_id, message_key), rows already
archived are skipped before insert and the insert itself ignores conflicts, so writing the
same conversation again, after a crash at any point, adds nothing. On PostgreSQL the rows go
in with COPY into a temporary staging table and one INSERT ... SELECT ... ON CONFLICT DO
NOTHING; elsewhere (the SQLite default) through bulk_create(ignore_conflicts=True).
Nothing here touches Redis: the caller deletes only after `write_conversations` returned,
that is after the transaction committed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction

from conversations.checkpoints.base import Conversation, Held, Unreadable
from conversations.checkpoints.history import Entry
from conversations.checkpoints.messages import PROVISIONAL_PREFIX, Message
from conversations.models import ArchivedConversation, ConversationHistory, LiveThread, QuarantinedCheckpoint

logger = logging.getLogger(__name__)


COLUMNS = [
    "conversation_id",
    "customer_id",
    "timestamp",
    "role",
    "content",
    "content_blocks",
    "message_id",
    "position",
    "name",
    "tool_calls",
    "tool_call_id",
    "metadata",
    "message_key",
    "source",
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "archived_at",
    "removed_at",
    "fingerprint",
]
STAGING = "conversation_history_staging"
# A message not yet archived: its conversation, the entry, its fingerprint, its position.
NewRow = tuple[Conversation, Entry, str, int]
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
        archived = _archived(ids)
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
            _move(moves)
        if rows and not _insert(rows, now):
            exact = False  # some rows were there already
        if changes:
            _update(changes)
        if removals:
            _mark_removed(removals)
        if not exact:
            archived = _archived(ids)
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


def _mark_removed(removals: list[tuple[str, str, datetime]]) -> None:
    """Mark the rows removed from the bot's state; a removal time once set is kept."""
    time_type = "timestamptz" if connection.vendor == "postgresql" else "datetime"
    _set_by_key("removed_at", time_type, removals, only_if="h.removed_at IS NULL")


def _set_by_key(column: str, sql_type: str, values: list[tuple[str, str, Any]], only_if: str = "") -> None:
    """Set `column` of each row named by (conversation_id, message_key) to its value, one
    UPDATE ... FROM (VALUES ...) a chunk; `only_if` further limits the rows updated."""
    table = ConversationHistory._meta.db_table
    condition = f" AND {only_if}" if only_if else ""
    with connection.cursor() as cursor:
        for start in range(0, len(values), UPDATE_CHUNK):
            chunk = values[start : start + UPDATE_CHUNK]
            cursor.execute(
                f"UPDATE {table} AS h SET {column} = CAST(v.value AS {sql_type}) "
                f"FROM (VALUES {', '.join(['(%s, %s, %s)'] * len(chunk))}) AS v(conversation_id, message_key, value) "
                f"WHERE h.conversation_id = v.conversation_id AND h.message_key = v.message_key{condition}",
                [value for row in chunk for value in row],
            )


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


def _move(moves: list[tuple[str, str, int]]) -> None:
    """Give archived rows their new positions."""
    _set_by_key("position", "integer", moves)


def fingerprint(message: Message) -> str:
    """A digest of everything stored of a message: a different one under the same identity
    means the bot edited the message in place."""
    fields = [
        message.role, message.content, message.content_blocks, message.message_id, message.name,
        message.tool_calls, message.tool_call_id, message.metadata,
    ]
    return hashlib.sha1(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class Change:
    """An archived message to bring up to date: its newest content, and whether the bot still has it."""

    conversation_id: str
    entry: Entry
    fingerprint: str


def _update(changes: list[Change]) -> None:
    """One UPDATE ... FROM (VALUES ...) for the batch's edited and removed messages, and those
    found to have first appeared earlier than archived (their time, checkpoint and namespace
    become those of that first appearance). A removal time once set is kept; it is cleared if
    the bot has the message again."""
    table = ConversationHistory._meta.db_table
    values, params = [], []
    for change in changes:
        m = change.entry.message
        values.append("(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
        params += [
            change.conversation_id, change.entry.key, m.content, _json_param(m.content_blocks), m.name,
            _json_param(m.tool_calls), m.tool_call_id, _json_param(m.metadata), change.fingerprint,
            change.entry.removed_at, change.entry.removed_at is not None,
            change.entry.time, change.entry.checkpoint_id, change.entry.ns,
        ]
    json_type = "jsonb" if connection.vendor == "postgresql" else "text"
    time_type = "timestamptz" if connection.vendor == "postgresql" else "datetime"
    with connection.cursor() as cursor:
        for start in range(0, len(values), UPDATE_CHUNK):
            chunk = values[start : start + UPDATE_CHUNK]
            cursor.execute(
                f"""
                UPDATE {table} AS h SET
                    content = v.content, content_blocks = CAST(v.blocks AS {json_type}), name = v.name,
                    tool_calls = CAST(v.calls AS {json_type}), tool_call_id = v.call_id,
                    metadata = CAST(v.metadata AS {json_type}), fingerprint = v.fingerprint,
                    removed_at = CASE WHEN v.removed THEN COALESCE(h.removed_at, CAST(v.removed_at AS {time_type})) END,
                    checkpoint_id = CASE WHEN CAST(v.first_at AS {time_type}) < h.timestamp THEN v.checkpoint_id ELSE h.checkpoint_id END,
                    checkpoint_ns = CASE WHEN CAST(v.first_at AS {time_type}) < h.timestamp THEN v.ns ELSE h.checkpoint_ns END,
                    timestamp = CASE WHEN CAST(v.first_at AS {time_type}) < h.timestamp THEN CAST(v.first_at AS {time_type}) ELSE h.timestamp END
                FROM (VALUES {", ".join(chunk)}) AS v(conversation_id, message_key, content, blocks, name, calls,
                                                     call_id, metadata, fingerprint, removed_at, removed, first_at,
                                                     checkpoint_id, ns)
                WHERE h.conversation_id = v.conversation_id AND h.message_key = v.message_key
                """,
                params[start * 14 : (start + len(chunk)) * 14],
            )


UPDATE_CHUNK = 500


def _json_param(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


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


def _archived(conversation_ids: list[str]) -> dict[str, Archived]:
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


def _claim(known: Archived, message: Any, previous: str | None) -> Provisional | None:
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
        return _copy_insert(_copy_lines(rows, now))
    ConversationHistory.objects.bulk_create(
        [ConversationHistory(**_values(row, now)) for row in rows], ignore_conflicts=True, batch_size=500
    )
    return False  # bulk_create does not say what it skipped


def _copy_insert(lines: list[str]) -> bool:
    """COPY the rows straight into the table; if any of them is already there (only possible
    when something else wrote since we looked), redo the batch through a staging table and
    INSERT ... ON CONFLICT DO NOTHING instead. True if the straight COPY went in."""
    columns = ", ".join(f'"{name}"' for name in COLUMNS)
    with connection.cursor() as cursor:
        try:
            with transaction.atomic():
                _copy(cursor, f"COPY conversation_history ({columns}) FROM STDIN", lines)
            return True
        except IntegrityError:
            logger.info("Some rows of this batch are archived already; inserting the rest")
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM conversation_history WITH NO DATA"
        )
        _copy(cursor, f"COPY {STAGING} ({columns}) FROM STDIN", lines)
        cursor.execute(
            f"INSERT INTO conversation_history ({columns}) SELECT {columns} FROM {STAGING} "
            "ON CONFLICT (conversation_id, message_key) DO NOTHING"
        )
        cursor.execute(f"TRUNCATE {STAGING}")
    return False


COPY_CHUNK_LINES = 1000


def _copy(cursor: Any, statement: str, lines: list[str]) -> None:
    """Send lines in COPY text format. psycopg's copy() is not behind Django's error
    translation: wrap it, so that a lost connection is an OperationalError (retried) and a
    duplicate an IntegrityError."""
    with connection.wrap_database_errors, cursor.copy(statement) as copy:
        for start in range(0, len(lines), COPY_CHUNK_LINES):
            copy.write("".join(lines[start : start + COPY_CHUNK_LINES]))


def _copy_lines(rows: list[NewRow], now: datetime) -> list[str]:
    """The rows in COPY's text format, in COLUMNS order. Formatting is the archiver's hottest
    loop, so the columns a conversation's rows share are formatted once per conversation."""
    stamp_now = now.isoformat()
    shared: dict[int, tuple[str, str]] = {}
    lines = []
    for conversation, entry, digest, position in rows:
        head_source = shared.get(id(conversation))
        if head_source is None:
            head_source = shared[id(conversation)] = (
                f"{_text(conversation.conversation_id)}\t{_text(conversation.state.customer_id)}",
                f"{conversation.source}\t{_text(conversation.candidate.thread_id)}",
            )
        head, source = head_source
        m = entry.message
        removed = "\\N" if entry.removed_at is None else entry.removed_at.isoformat()
        lines.append(
            f"{head}\t{entry.time.isoformat()}\t{_text(m.role)}\t{_text(m.content)}\t{_json(m.content_blocks)}\t"
            f"{_text(m.message_id)}\t{position}\t{_text(m.name)}\t{_json(m.tool_calls)}\t{_text(m.tool_call_id)}\t"
            f"{_json(m.metadata)}\t{_text(entry.key)}\t{source}\t{_text(entry.ns)}\t{_text(entry.checkpoint_id)}\t"
            f"{stamp_now}\t{removed}\t{digest}\n"
        )
    return lines


def _text(value: str | None) -> str:
    """A text field of COPY's text format: NULL is \\N; backslash, newline, CR and tab are escaped."""
    if value is None:
        return "\\N"
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    return value


def _json(value: Any) -> str:
    return "\\N" if value is None else _text(orjson.dumps(value).decode())


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


# --- The live mirror's watermarks (LiveThread) ---


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


def count_new(conversations: list[Conversation]) -> int:
    """How many of the messages read are not archived yet (what a dry run reports)."""
    archived = _archived(sorted({c.conversation_id for c in conversations}))
    seen: set[tuple[str, str]] = set()
    for c in conversations:
        rows = archived.get(c.conversation_id, Archived()).rows
        seen.update((c.conversation_id, e.key) for e in c.entries if e.key not in rows)
    return len(seen)


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
