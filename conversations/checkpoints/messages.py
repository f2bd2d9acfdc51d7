"""Turning stored LangGraph state into plain message records, without running any of it.

Checkpoint values are parsed as JSON and nothing else. A LangChain `lc` envelope names a
class (`["langchain", "schema", "messages", "AIMessage"]`); we read that name as a label and
never import it, so an envelope naming `os.system` is just an unknown message type. Anything
we cannot read this way raises `MalformedCheckpoint`, and the caller quarantines the raw value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from datetime import timezone as dt_timezone
from typing import Any

import orjson
from django.utils import timezone

from conversations.conf import Fields
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
    # Not a message: an instruction to add_messages, found in pending writes (merge_messages).
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


@dataclass
class State:
    """The conversation-level facts and the messages of one checkpoint's state."""

    messages: list[Message]  # what the checkpoint holds
    conversation_id: str | None
    customer_id: str | None
    summary: str | None
    inputs: list[Message] = field(default_factory=list)  # a run's input LangGraph has not applied

    def current(self) -> list[Message]:
        """The messages as LangGraph will have them once it applies the input."""
        return merge_messages(self.messages, self.inputs) if self.inputs else list(self.messages)

    def fill_from(self, metadata: dict[str, Any], fields: Fields) -> None:
        """Where the state has no conversation or customer id, take the one the checkpoint's
        metadata carries (savers that follow LangGraph's get_checkpoint_metadata copy the
        run's configurable keys there)."""
        self.conversation_id = self.conversation_id or first_id(metadata, fields.conversation_id, strict=False)
        self.customer_id = self.customer_id or first_id(metadata, fields.customer_id, strict=False)


# orjson reads integers outside 64 bits as floats (so does -2**63 - 1, 19 digits); where
# such a number may be present, the standard library (exact, slower) reads the document
# instead. Looking for one must cost less than the parse: a regular expression over the
# document took longer than orjson itself, so digit runs are found with translate + find.
# LangGraph's channel versions are 32-digit strings: a run only counts when it starts a
# number token (after `:`, `,` or `[`, whitespace and a minus sign allowed).
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # digits to "0", the rest to " "
_LONG_RUN = b"0" * 19


def _may_hold_long_integer(data: bytes) -> bool:
    runs = data.translate(_DIGIT_MAP)
    start = runs.find(_LONG_RUN)
    while start != -1:
        i = start - 1
        if i >= 0 and data[i] == 45:  # "-"
            i -= 1
        while i >= 0 and data[i] in b" \t\n\r":
            i -= 1
        if i < 0 or data[i] in b":,[":
            return True
        end = runs.find(b" ", start)
        if end == -1:
            return False
        start = runs.find(_LONG_RUN, end)
    return False


def parse_json(raw: bytes | str, what: str) -> Any:
    """Parse stored JSON, strictly: invalid UTF-8 and lone surrogates are refused."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        if _may_hold_long_integer(data):
            return json.loads(data.decode("utf-8"))
        return orjson.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: nesting too deep for json.loads
        raise MalformedCheckpoint(f"{what} is not JSON: {exc}") from None


def may_hold_nul(raw: bytes | None) -> bool:
    """Whether a JSON text may decode to a NUL character (cheap test before the exact walk)."""
    return raw is not None and b"\\u0000" in raw


# The channel that holds a run's input until LangGraph's first step applies it.
START_CHANNEL = "__start__"
# The key prefix of a message read, without an id, from a write LangGraph has not applied yet.
PROVISIONAL_PREFIX = "input:"


def parse_state(channel_values: Any, fields: Fields) -> State:
    """Read the archived fields of a state dict; `fields` names the state keys to use.

    When the checkpoint is a run's input checkpoint (the bot stopped before LangGraph applied
    the input), the new messages are still in the `__start__` channel: they are read too
    (`State.inputs`), to be appended as LangGraph would when it resumes, so a user's last
    message is never dropped.
    """
    if not isinstance(channel_values, dict):
        raise MalformedCheckpoint(f"the state is a {type(channel_values).__name__}, not an object")
    raw_messages = channel_values.get(fields.messages)
    start = channel_values.get(START_CHANNEL)
    if raw_messages is None and isinstance(start, dict):
        raw_messages = []
    if raw_messages is None:
        raise MalformedCheckpoint(f"the state has no {fields.messages!r} list")
    if not isinstance(raw_messages, list):
        raise MalformedCheckpoint(f"{fields.messages!r} is a {type(raw_messages).__name__}, not a list")
    parsed = [parse_message(m, i) for i, m in enumerate(raw_messages)]
    state = State(
        messages=[m for m in parsed if m.role != REMOVE],  # applied already; nothing to keep
        conversation_id=first_id(channel_values, fields.conversation_id),
        customer_id=first_id(channel_values, fields.customer_id),
        summary=_optional_text(channel_values, fields.summary),
    )
    if isinstance(start, dict):
        state.inputs = _input_messages(start.get(fields.messages))
        state.conversation_id = first_id(start, fields.conversation_id) or state.conversation_id
        state.customer_id = first_id(start, fields.customer_id) or state.customer_id
        if _optional_text(start, fields.summary) is not None:
            state.summary = start[fields.summary]
    return state


def _input_messages(raw: Any) -> list[Message]:
    """A run's input messages, in the forms LangGraph accepts: message dicts, a plain string
    (a human message) or a (role, text) pair."""
    items = raw if isinstance(raw, list) and not _is_pair(raw) else ([] if raw is None else [raw])
    messages = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"role": "human", "content": item}
        elif _is_pair(item):
            item = {"role": item[0], "content": item[1]}
        messages.append(unapplied(parse_message(item, i)))
    return messages


def unapplied(message: Message) -> Message:
    """Mark a message read from a write LangGraph has not applied yet (a run's input, a
    task's pending write): without an id, it is provisional, since add_messages gives it one."""
    message.provisional = message.message_id is None
    return message


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


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
    if role == "chat" and isinstance(kwargs.get("role"), str):
        role = ROLE_ALIASES.get(kwargs["role"], kwargs["role"])
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


def first_id(values: dict[str, Any], names: tuple[str, ...], strict: bool = True) -> str | None:
    """The first of `names` that `values` sets to a non-empty string or integer. A value of
    another type is refused (`strict`, the state) or passed over (metadata)."""
    for name in names:
        value = values.get(name)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            if strict:
                raise MalformedCheckpoint(f"the state's {name!r} is a {type(value).__name__}, not a string")
            continue
        return str(value)
    return None


def _optional_text(state: dict[str, Any], key: str) -> str | None:
    value = state.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedCheckpoint(f"the state's {key!r} is a {type(value).__name__}, not a string")


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


def message_keys(messages: list[Message], scope: str) -> list[str]:
    """A stable identity for each message, so that archiving the same state again adds nothing.

    LangChain ids are unique, so a message with one is keyed by it. A message without one is
    keyed by a digest of what it is (role, text, tool call, its own time) and how many
    identical messages came before it in this state; `scope` (the thread and namespace) keeps
    identical messages of unrelated conversations apart. A provisional message (a run's input
    without an id yet) gets the same digest under its own prefix, PROVISIONAL_PREFIX.
    """
    keys = []
    seen: dict[str, int] = {}
    for message in messages:
        if message.message_id:
            keys.append("id:" + message.message_id)
            continue
        body = json.dumps(
            [
                scope,
                message.role,
                message.content,
                message.content_blocks,
                message.tool_call_id,
                message.name,
                message.own_timestamp.isoformat() if message.own_timestamp else None,
            ],
            ensure_ascii=False,
            sort_keys=True,
            default=str,
        )
        occurrence = seen.get(body, 0)
        seen[body] = occurrence + 1
        digest = hashlib.sha256(f"{body}#{occurrence}".encode("utf-8", "surrogatepass")).hexdigest()
        keys.append((PROVISIONAL_PREFIX if message.provisional else "sha256:") + digest)
    return keys


def merge_messages(current: list[Message], pending: list[Message]) -> list[Message]:
    """Apply pending writes like LangGraph's add_messages: a known id replaces, a RemoveMessage
    removes its id (REMOVE_ALL everything before it), anything else appends."""
    merged = list(current)
    for message in pending:
        if message.role == REMOVE:
            if message.message_id == REMOVE_ALL:
                merged = []
            else:
                merged = [m for m in merged if m.message_id != message.message_id]
            continue
        same = next((i for i, m in enumerate(merged) if message.message_id and m.message_id == message.message_id), None)
        if same is None:
            merged.append(message)
        else:
            merged[same] = message
    return merged


def check_storable(state: State, messages: list[Message]) -> None:
    """PostgreSQL text and jsonb cannot hold NUL characters or lone surrogates: refuse them here,
    so one such value quarantines its own conversation instead of failing a whole batch."""
    values: list[Any] = [state.conversation_id, state.customer_id, state.summary]
    for m in messages:
        values += [m.role, m.content, m.message_id, m.name, m.tool_call_id, m.content_blocks, m.tool_calls, m.metadata]
    for text in _strings(values):
        if "\x00" in text:
            raise MalformedCheckpoint("a message holds a NUL character, which PostgreSQL text cannot store")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedCheckpoint("a message holds a lone UTF-16 surrogate, which is not valid text") from None


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)

