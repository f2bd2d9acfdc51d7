"""New archived rows into PostgreSQL with COPY: their text format, and the statements.

Safety design: the rows go in with one COPY straight into the table; if any of them is there
already (only possible when something else wrote since the writer looked), the batch is
redone with COPY into a temporary staging table and one INSERT ... SELECT ... ON CONFLICT DO
NOTHING, so a row is never stored twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction

from conversations.checkpoints.base import Conversation
from conversations.checkpoints.history import Entry

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
COPY_CHUNK_LINES = 1000
# A message not yet archived: its conversation, the entry, its fingerprint, its position.
NewRow = tuple[Conversation, Entry, str, int]


def copy_insert(lines: list[str]) -> bool:
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


def _copy(cursor: Any, statement: str, lines: list[str]) -> None:
    """Send lines in COPY text format. psycopg's copy() is not behind Django's error
    translation: wrap it, so that a lost connection is an OperationalError (retried) and a
    duplicate an IntegrityError."""
    with connection.wrap_database_errors, cursor.copy(statement) as copy:
        for start in range(0, len(lines), COPY_CHUNK_LINES):
            copy.write("".join(lines[start : start + COPY_CHUNK_LINES]))


def copy_lines(rows: list[NewRow], now: datetime) -> list[str]:
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
