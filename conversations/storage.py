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
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from conversations import conf
from conversations.checkpoints.base import Broken, Conversation
from conversations.checkpoints.messages import message_keys
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
JSON_COLUMNS = {"content_blocks", "tool_calls", "metadata"}
STAGING = "conversation_history_staging"
# Errors worth another attempt: the connection or the server, not the data.
RETRYABLE = (OperationalError, InterfaceError)


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
        retry=retry_if_exception_type(RETRYABLE),
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
        known = _archived_keys(ids)
        rows: list[tuple[Any, ...]] = []
        added = dict.fromkeys(ids, 0)
        for conversation in conversations:
            keys, last = known.setdefault(conversation.conversation_id, (set(), -1))
            for message, key, stamp in zip(
                conversation.messages, message_keys(conversation.messages, conversation.scope), conversation.timestamps
            ):
                if key in keys:
                    continue
                keys.add(key)
                last += 1
                rows.append(_row(conversation, message, key, stamp, last, now))
                added[conversation.conversation_id] += 1
            known[conversation.conversation_id] = (keys, last)
        if rows:
            _insert(rows)
        _refresh_conversations(conversations, now)
    return added


def _archived_keys(conversation_ids: list[str]) -> dict[str, tuple[set[str], int]]:
    """For each conversation already in the archive: its message keys and last position."""
    known: dict[str, tuple[set[str], int]] = {}
    rows = ConversationHistory.objects.filter(conversation_id__in=conversation_ids).values_list(
        "conversation_id", "message_key", "position"
    )
    for conversation_id, key, position in rows.iterator(chunk_size=5000):
        keys, last = known.get(conversation_id, (set(), -1))
        keys.add(key)
        known[conversation_id] = (keys, max(last, position))
    return known


def _row(conversation: Conversation, message: Any, key: str, stamp: datetime, position: int, now: datetime) -> tuple[Any, ...]:
    candidate = conversation.candidate
    return (
        conversation.conversation_id,
        conversation.state.customer_id,
        stamp,
        message.role,
        message.content,
        message.content_blocks,
        message.message_id,
        position,
        message.name,
        message.tool_calls,
        message.tool_call_id,
        message.metadata,
        key,
        conversation.source,
        candidate.thread_id,
        candidate.checkpoint_ns,
        conversation.checkpoint_id,
        now,
    )


def _insert(rows: list[tuple[Any, ...]]) -> None:
    if connection.vendor == "postgresql":
        _copy_insert(rows)
    else:
        ConversationHistory.objects.bulk_create(
            [ConversationHistory(**dict(zip(COLUMNS, row))) for row in rows], ignore_conflicts=True, batch_size=500
        )


def _copy_insert(rows: list[tuple[Any, ...]]) -> None:
    json_at = [i for i, name in enumerate(COLUMNS) if name in JSON_COLUMNS]
    columns = ", ".join(f'"{name}"' for name in COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM conversation_history WITH NO DATA"
        )
        with cursor.copy(f"COPY {STAGING} ({columns}) FROM STDIN") as copy:
            for row in rows:
                values = list(row)
                for i in json_at:
                    if values[i] is not None:
                        values[i] = json.dumps(values[i], ensure_ascii=False)
                copy.write_row(values)
        cursor.execute(
            f"INSERT INTO conversation_history ({columns}) SELECT {columns} FROM {STAGING} "
            "ON CONFLICT (conversation_id, message_key) DO NOTHING"
        )
        cursor.execute(f"TRUNCATE {STAGING}")


def _refresh_conversations(conversations: list[Conversation], now: datetime) -> None:
    """Upsert the conversation-level facts; counts and first/last times come from the rows."""
    facts = {c.conversation_id: (c.state.customer_id, c.candidate.thread_id, c.state.summary) for c in conversations}
    if not facts:
        return
    values = ", ".join(["(%s, %s, %s, %s)"] * len(facts))
    params: list[Any] = []
    for conversation_id, (customer_id, thread_id, summary) in facts.items():
        params += [conversation_id, customer_id, thread_id, summary]
    table = ArchivedConversation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH facts (conversation_id, customer_id, thread_id, summary) AS (VALUES {values}),
            stats AS (
                SELECT conversation_id, COUNT(*) AS n, MIN(timestamp) AS first_at, MAX(timestamp) AS last_at
                FROM conversation_history
                WHERE conversation_id IN (SELECT conversation_id FROM facts)
                GROUP BY conversation_id
            )
            INSERT INTO {table} (conversation_id, customer_id, thread_id, summary, first_message_at,
                                 last_message_at, message_count, first_archived_at, last_archived_at)
            SELECT facts.conversation_id, facts.customer_id, facts.thread_id, facts.summary,
                   stats.first_at, stats.last_at, stats.n, %s, %s
            FROM facts JOIN stats ON stats.conversation_id = facts.conversation_id
            WHERE true
            ON CONFLICT (conversation_id) DO UPDATE SET
                customer_id = COALESCE(EXCLUDED.customer_id, {table}.customer_id),
                thread_id = EXCLUDED.thread_id,
                summary = COALESCE(EXCLUDED.summary, {table}.summary),
                first_message_at = EXCLUDED.first_message_at,
                last_message_at = EXCLUDED.last_message_at,
                message_count = EXCLUDED.message_count,
                last_archived_at = EXCLUDED.last_archived_at
            """,
            params + [now, now],
        )


def quarantine(broken: list[Broken], now: datetime) -> list[Broken]:
    """Keep unreadable values; return those quarantined now for the first time."""
    keep = [b for b in broken if b.counted]
    if not keep:
        return []
    digests = {id(b): hashlib.sha1(b.raw_value).hexdigest() for b in keep}
    with transaction.atomic():
        present = set(
            QuarantinedCheckpoint.objects.filter(key__in={b.key for b in keep}).values_list("key", "value_sha1")
        )
        new = [b for b in keep if (b.key, digests[id(b)]) not in present]
        QuarantinedCheckpoint.objects.bulk_create(
            [
                QuarantinedCheckpoint(
                    key=b.key,
                    source=b.source,
                    redis_type=b.redis_type,
                    raw_value=b.raw_value,
                    value_sha1=digests[id(b)],
                    error=b.error,
                    quarantined_at=now,
                )
                for b in new
            ],
            ignore_conflicts=True,
        )
    return new


def is_data_error(exc: DatabaseError) -> bool:
    """An error caused by the rows themselves, as opposed to the server or the schema."""
    from django.db import DataError, IntegrityError

    return isinstance(exc, (DataError, IntegrityError))
