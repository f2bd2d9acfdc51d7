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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from conversations import conf
from conversations.checkpoints.base import Broken, Conversation
from conversations.checkpoints.messages import PROVISIONAL_PREFIX, message_keys
from conversations.models import ArchivedConversation, ConversationHistory, QuarantinedCheckpoint

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
]
STAGING = "conversation_history_staging"
# A message not yet archived: its conversation, the message, its key, its time, its position.
NewRow = tuple[Conversation, Any, str, datetime, int]
# Errors worth another attempt: the connection or the server, not the data.
RETRYABLE = (OperationalError, InterfaceError)
# Values that cannot be stored, found only while the rows are formatted or sent: text with a
# lone surrogate (read from JSON, or a key name that is not UTF-8), JSON nested deeper than
# orjson writes (255) or json.dumps recurses. Like a row the database refused, they quarantine
# their own conversation instead of failing the batch on every run.
UNSTORABLE = (UnicodeError, orjson.JSONEncodeError, RecursionError)
# SQLSTATE class 54, "program limit exceeded": a value too big for an index entry (a 3 kB id)
# or for the content search's tsvector (megabytes of distinct words). Data, not the server.
PROGRAM_LIMIT_EXCEEDED = "54"


def with_retry(action: Callable[[], T], what: str) -> T:
    """Run a database action with the configured attempts; between them, drop the
    connection so the next attempt starts on a fresh one."""

    def before_sleep(state: Any) -> None:
        logger.warning(
            "Database error while %s (attempt %d of %d): %s; retrying in %ss",
            what,
            state.attempt_number,
            conf.get("RETRY_ATTEMPTS"),
            state.outcome.exception(),
            conf.get("RETRY_DELAY_SECONDS"),
        )
        connection.close()

    retrying = Retrying(
        stop=stop_after_attempt(max(1, int(conf.get("RETRY_ATTEMPTS")))),
        wait=wait_fixed(conf.get("RETRY_DELAY_SECONDS")),
        retry=retry_if_exception(lambda exc: isinstance(exc, RETRYABLE) and not is_data_error(exc)),
        before_sleep=before_sleep,
        sleep=lambda seconds: pause(seconds),
        reraise=True,
    )
    return retrying(action)


def pause(seconds: float) -> None:
    """The wait between attempts (a seam for tests)."""
    time.sleep(seconds)


def write_conversations(conversations: list[Conversation], now: datetime) -> dict[str, int]:
    """Store the messages not yet archived; return how many rows each conversation gained."""
    with transaction.atomic():
        ids = sorted({c.conversation_id for c in conversations})
        archived = _archived(ids)
        rows: list[NewRow] = []
        added = dict.fromkeys(ids, 0)
        exact = True  # whether `archived` still counts what the table holds
        for conversation in conversations:
            known = archived.setdefault(conversation.conversation_id, Archived())
            state_keys = message_keys(conversation.messages, conversation.scope)
            for i, (message, key, stamp) in enumerate(zip(conversation.messages, state_keys, conversation.timestamps)):
                if key in known.keys:
                    continue
                claimed = _claim(known, message, state_keys[i - 1] if i else None)
                if claimed is not None:
                    if _replace_provisional(conversation, claimed, message, key):
                        known.keys[key] = claimed.position
                        continue
                    exact = False  # changed meanwhile: insert it as any new message
                rows.append((conversation, message, key, stamp, known.add(key, stamp)))
                added[conversation.conversation_id] += 1
        if rows and not _insert(rows, now):
            exact = False  # some rows were there already
        if not exact:
            archived = _archived(ids)
        _refresh_conversations(conversations, archived, now)
    return added


@dataclass
class Provisional:
    """An archived row of a message read, without an id, from a write LangGraph had not applied."""

    key: str
    position: int
    role: str
    content: str


@dataclass
class Archived:
    """What the archive holds of one conversation: its message keys with their positions, how
    many rows, the first and last message times, and the provisional rows."""

    keys: dict[str, int] = field(default_factory=dict)
    last: int = -1
    count: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    provisional: list[Provisional] = field(default_factory=list)

    def add(self, key: str, stamp: datetime, position: int | None = None) -> int:
        """Count a row (a new one gets the next position); return its position."""
        position = self.last + 1 if position is None else position
        self.keys[key] = position
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
        "conversation_id", "message_key", "position", "timestamp"
    )
    waiting: list[str] = []
    for conversation_id, key, position, stamp in rows.iterator(chunk_size=5000):
        found.setdefault(conversation_id, Archived()).add(key, stamp, position)
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
    before = -1 if previous is None else known.keys.get(previous)
    for row in known.provisional:
        if row.role == message.role and row.content == message.content and before == row.position - 1:
            known.provisional.remove(row)
            return row
    return None


def _replace_provisional(conversation: Conversation, row: Provisional, message: Any, key: str) -> bool:
    """Give the provisional row the message's id, key and metadata; it keeps its position and
    time. False if the rows changed since they were read (another writer stored the message
    under its id, or the provisional row was purged): then the provisional row goes, and the
    caller inserts the message like any other (ON CONFLICT keeps a row already there)."""
    archived = ConversationHistory.objects.filter(conversation_id=conversation.conversation_id)
    if archived.filter(message_key=key).exists():
        archived.filter(message_key=row.key).delete()
        return False
    return bool(archived.filter(message_key=row.key).update(
        message_key=key,
        message_id=message.message_id,
        metadata=message.metadata,
        checkpoint_id=conversation.checkpoint_id,
    ))


def _values(row: NewRow, now: datetime) -> dict[str, Any]:
    conversation, message, key, stamp, position = row
    candidate = conversation.candidate
    return {
        "conversation_id": conversation.conversation_id,
        "customer_id": conversation.state.customer_id,
        "timestamp": stamp,
        "role": message.role,
        "content": message.content,
        "content_blocks": message.content_blocks,
        "message_id": message.message_id,
        "position": position,
        "name": message.name,
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "metadata": message.metadata,
        "message_key": key,
        "source": conversation.source,
        "thread_id": candidate.thread_id,
        "checkpoint_ns": candidate.checkpoint_ns,
        "checkpoint_id": conversation.checkpoint_id,
        "archived_at": now,
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
    for conversation, m, key, stamp, position in rows:
        head_tail = shared.get(id(conversation))
        if head_tail is None:
            c = conversation.candidate
            head_tail = shared[id(conversation)] = (
                f"{_text(conversation.conversation_id)}\t{_text(conversation.state.customer_id)}",
                f"{conversation.source}\t{_text(c.thread_id)}\t{_text(c.checkpoint_ns)}\t{_text(conversation.checkpoint_id)}\t{stamp_now}",
            )
        head, tail = head_tail
        lines.append(
            f"{head}\t{stamp.isoformat()}\t{_text(m.role)}\t{_text(m.content)}\t{_json(m.content_blocks)}\t"
            f"{_text(m.message_id)}\t{position}\t{_text(m.name)}\t{_json(m.tool_calls)}\t{_text(m.tool_call_id)}\t"
            f"{_json(m.metadata)}\t{_text(key)}\t{tail}\n"
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


def quarantine(broken: list[Broken], now: datetime) -> list[Broken]:
    """Keep unreadable values; return those quarantined now for the first time."""
    keep = [b for b in broken if b.counted]
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


def is_data_error(exc: BaseException) -> bool:
    """An error caused by the rows themselves, as opposed to the server or the schema."""
    from django.db import DataError, IntegrityError

    if isinstance(exc, (DataError, IntegrityError, *UNSTORABLE)):
        return True
    return str(getattr(exc.__cause__, "sqlstate", "") or "").startswith(PROGRAM_LIMIT_EXCEEDED)


def printable(text: str) -> str:
    """Text PostgreSQL can store, for key names and messages that may hold what it cannot (a
    key name that is not UTF-8, a lone surrogate, a NUL): those become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
