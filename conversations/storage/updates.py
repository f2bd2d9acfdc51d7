"""Archived rows brought up to date: messages the bot edited or removed from its state, found to
have first appeared earlier, or moved to make room for older ones found later.

Safety design: a row is named by its identity (conversation_id, message_key), values go as
parameters, a chunk of rows per UPDATE ... FROM (VALUES ...); a removal time once set is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db import connection

from conversations.checkpoints.history import Entry
from conversations.models import ConversationHistory

UPDATE_CHUNK = 500


@dataclass
class Change:
    """An archived message to bring up to date: its newest content, and whether the bot still has it."""

    conversation_id: str
    entry: Entry
    fingerprint: str


def update_rows(changes: list[Change]) -> None:
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


def _json_param(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def mark_removed(removals: list[tuple[str, str, datetime]]) -> None:
    """Mark the rows removed from the bot's state; a removal time once set is kept."""
    time_type = "timestamptz" if connection.vendor == "postgresql" else "datetime"
    _set_by_key("removed_at", time_type, removals, only_if="h.removed_at IS NULL")


def move_rows(moves: list[tuple[str, str, int]]) -> None:
    """Give archived rows their new positions."""
    _set_by_key("position", "integer", moves)


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
