"""What a stored value holds, as the delete guard counts it: every message found in it, at any
depth, by id, or by (role, text) for a message without one.

Safety design: the value is walked as plain data, whatever shape it has; the guard then lets a
key go only if every message counted here is committed in the archive, so counting a message
too many only keeps a key longer, and one counted too few could lose it.
"""

from __future__ import annotations

from typing import Any

from conversations.checkpoints.base import Held
from conversations.checkpoints.messages import KNOWN_ROLES, LC_CLASSES, REMOVE, parse_message
from conversations.exceptions import MalformedCheckpoint


def held_in(value: Any, held: Held) -> None:
    """Add every message found in a stored value, at any depth, to `held`: LangChain envelopes,
    role/content dicts, and the field maps that msgpack and message_to_dict leave (a "type"
    that is a message role, and a "content"). A RemoveMessage is not a message."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        if not _looks_like_message(item):
            stack.extend(item.values())
            continue
        fields = item.get("kwargs") if item.get("lc") == 1 else item
        message_id = fields.get("id") if isinstance(fields, dict) else None
        if isinstance(fields, dict) and isinstance(message_id, str) and message_id:
            if fields.get("type") != REMOVE:
                held.ids.add(message_id)  # the id is all that counts: no need to read the rest
            continue
        try:
            message = parse_message(item, 0)
        except MalformedCheckpoint:
            stack.extend(item.values())
            continue
        if message.role != REMOVE:
            held.anonymous.add((message.role, message.content))


def _looks_like_message(item: dict[str, Any]) -> bool:
    if item.get("lc") == 1:
        path = item.get("id")
        return isinstance(path, list) and bool(path) and isinstance(path[-1], str) and path[-1] in LC_CLASSES
    return "content" in item and (isinstance(item.get("role"), str) or item.get("type") in KNOWN_ROLES)
