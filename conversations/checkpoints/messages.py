"""Turning one stored LangGraph message into a plain message record, without running any of it.

Checkpoint values are parsed as JSON and nothing else (jsontext.py). A LangChain `lc` envelope
names a class (`["langchain", "schema", "messages", "AIMessage"]`); we read that name as a
label and never import it, so an envelope naming `os.system` is just an unknown message type.
Anything we cannot read this way raises `MalformedCheckpoint`, and the caller quarantines the
raw value. A whole state's messages, and what becomes of them, are state.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

from django.utils import timezone

from conversations.exceptions import MalformedCheckpoint

# LangChain message classes by the name in an lc envelope, and the role each stands for.
LC_CLASSES = {
    "HumanMessage": "human",
    "HumanMessageChunk": "human",
    "AIMessage": "ai",
    "AIMessageChunk": "ai",
    "ToolMessage": "tool",
    "ToolMessageChunk": "tool",
    "SystemMessage": "system",
    "SystemMessageChunk": "system",
    "FunctionMessage": "function",
    "FunctionMessageChunk": "function",
    "ChatMessage": "chat",
    "ChatMessageChunk": "chat",
    # Not a message: an instruction to add_messages, found in pending writes (state.merge_messages).
    "RemoveMessage": "remove",
}
# The role of a RemoveMessage, and the id with which one removes every message before it
# (langgraph.graph.message.REMOVE_ALL_MESSAGES).
REMOVE = "remove"
REMOVE_ALL = "__remove_all__"
# Simple-dict roles (OpenAI style) and the LangChain type each maps to.
ROLE_ALIASES = {"user": "human", "assistant": "ai", "human": "human", "ai": "ai"}
KNOWN_ROLES = {"human", "ai", "tool", "system", "function", "chat", "developer"}
MAX_ROLE_LENGTH = 32

# Fields with a column of their own; everything else a message carries goes to `metadata`.
COLUMN_FIELDS = {"type", "role", "content", "id", "name", "tool_calls", "tool_call_id"}

# The key prefix of a message read, without an id, from a write LangGraph has not applied yet
# (state.message_keys).
PROVISIONAL_PREFIX = "input:"


@dataclass
class Message:
    role: str
    content: str
    content_blocks: list[Any] | None
    message_id: str | None
    name: str | None
    tool_calls: list[Any] | None
    tool_call_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    own_timestamp: datetime | None = None
    # Read from a write LangGraph has not applied yet, without an id: LangGraph gives it one
    # when the run goes on, and the archive then recognises it (storage/write.py, _claim).
    provisional: bool = False


def unapplied(message: Message) -> Message:
    """Mark a message read from a write LangGraph has not applied yet (a run's input, a
    task's pending write): without an id, it is provisional, since add_messages gives it one."""
    return replace(message, provisional=message.message_id is None)


def parse_message(raw: Any, index: int) -> Message:
    if not isinstance(raw, dict):
        raise MalformedCheckpoint(f"message {index} is a {type(raw).__name__}, not an object")
    if "lc" in raw:
        role, fields = _from_lc_envelope(raw, index)
    elif "role" in raw:
        role, fields = _from_simple_dict(raw, index)
    elif isinstance(raw.get("type"), str) and isinstance(raw.get("data"), dict):
        # langchain_core.messages.message_to_dict(): {"type": "human", "data": {...}}
        role, fields = _checked_role(raw["type"], index), raw["data"]
    elif isinstance(raw.get("type"), str) and "content" in raw:
        role, fields = _checked_role(raw["type"], index), raw
    else:
        raise MalformedCheckpoint(f"message {index} is neither a LangChain message nor a role/content dict")

    content, blocks = _content(fields.get("content"), index)
    return Message(
        role=role,
        content=content,
        content_blocks=blocks,
        message_id=_optional_str(fields, "id", index),
        name=_optional_str(fields, "name", index),
        tool_calls=_optional_list(fields, "tool_calls", index),
        tool_call_id=_optional_str(fields, "tool_call_id", index),
        metadata={k: v for k, v in fields.items() if k not in COLUMN_FIELDS},
        own_timestamp=_own_timestamp(fields, index),
    )


def _from_lc_envelope(raw: dict[str, Any], index: int) -> tuple[str, dict[str, Any]]:
    path, kwargs = raw.get("id"), raw.get("kwargs")
    if raw.get("type") != "constructor" or not isinstance(path, list) or not path or not isinstance(kwargs, dict):
        raise MalformedCheckpoint(f"message {index} is an lc envelope of an unreadable kind ({raw.get('type')!r})")
    class_name = path[-1]
    if not isinstance(class_name, str) or class_name not in LC_CLASSES or path[0] != "langchain":
        raise MalformedCheckpoint(f"message {index} names {'.'.join(map(str, path))!r}, which is not a LangChain message")
    role = LC_CLASSES[class_name]
    chat_role = kwargs.get("role")
    if role == "chat" and isinstance(chat_role, str):
        role = ROLE_ALIASES.get(chat_role, chat_role)
    return _checked_role(role, index), kwargs


def _from_simple_dict(raw: dict[str, Any], index: int) -> tuple[str, dict[str, Any]]:
    role = raw["role"]
    if not isinstance(role, str):
        raise MalformedCheckpoint(f"message {index} has a role of type {type(role).__name__}")
    return _checked_role(ROLE_ALIASES.get(role, role), index), raw


def _checked_role(role: str, index: int) -> str:
    if not role or len(role) > MAX_ROLE_LENGTH:
        raise MalformedCheckpoint(f"message {index} has an unusable role {role[:40]!r}")
    return role


def _content(value: Any, index: int) -> tuple[str, list[Any] | None]:
    """The readable text, and the original blocks when the content is a list of them."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, list):
        texts = []
        for block in value:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif not isinstance(block, dict):
                raise MalformedCheckpoint(f"message {index} has a content block of type {type(block).__name__}")
        return "".join(texts), value  # as LangChain's own `message.text` joins them
    raise MalformedCheckpoint(f"message {index} has content of type {type(value).__name__}")


def _optional_str(fields: dict[str, Any], key: str, index: int) -> str | None:
    value = fields.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedCheckpoint(f"message {index} has a {key!r} of type {type(value).__name__}")


def _optional_list(fields: dict[str, Any], key: str, index: int) -> list[Any] | None:
    value = fields.get(key)
    if value is None or isinstance(value, list):
        return value or None
    raise MalformedCheckpoint(f"message {index} has {key!r} of type {type(value).__name__}")


def _own_timestamp(fields: dict[str, Any], index: int) -> datetime | None:
    """The time a message carries itself: a simple dict's `timestamp`, or LangChain's additional_kwargs one."""
    value = fields.get("timestamp")
    extra = fields.get("additional_kwargs")
    if value is None and isinstance(extra, dict):
        value = extra.get("timestamp")
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise MalformedCheckpoint(f"message {index} has an unreadable timestamp: {exc}") from None


def parse_time(value: Any) -> datetime:
    """An ISO-8601 string or epoch seconds/milliseconds as an aware datetime.

    Times without an offset are read in the project's time zone (Europe/Madrid).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=dt_timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value!r} is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value[:60]!r} is not ISO-8601") from None
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        return parsed
    raise ValueError(f"a {type(value).__name__} is not a time")
