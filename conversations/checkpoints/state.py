"""One checkpoint's state, read as data: its messages and conversation-level facts, the
messages as LangGraph will have them once it applies what is pending (add_messages), a stable
identity for each message, and the check that what is kept fits PostgreSQL.

Safety design: as messages.py, nothing stored is run or imported; a state that cannot be read
this way raises `MalformedCheckpoint`, and the caller quarantines the raw value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from conversations.checkpoints.messages import (
    PROVISIONAL_PREFIX,
    REMOVE,
    REMOVE_ALL,
    Message,
    parse_message,
    unapplied,
)
from conversations.conf import Fields
from conversations.exceptions import MalformedCheckpoint

# The channel that holds a run's input until LangGraph's first step applies it.
START_CHANNEL = "__start__"


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

    def fill_from_pending(self, values: dict[str, Any], fields: Fields) -> None:
        """Take the facts that pending writes set (`values` by channel): LangGraph applies them
        over the checkpoint's when the run goes on."""
        self.conversation_id = first_id(values, fields.conversation_id, strict=False) or self.conversation_id
        self.customer_id = first_id(values, fields.customer_id, strict=False) or self.customer_id
        summary = values.get(fields.summary)
        if isinstance(summary, str) and summary:
            self.summary = summary

    def fill_from(self, metadata: dict[str, Any], fields: Fields) -> None:
        """Where the state has no conversation or customer id, take the one the checkpoint's
        metadata carries (savers that follow LangGraph's get_checkpoint_metadata copy the
        run's configurable keys there)."""
        self.conversation_id = self.conversation_id or first_id(metadata, fields.conversation_id, strict=False)
        self.customer_id = self.customer_id or first_id(metadata, fields.customer_id, strict=False)


def fields_of(fields: Fields) -> set[str]:
    """The state channels besides the messages whose pending writes matter."""
    return {*fields.conversation_id, *fields.customer_id, fields.summary}


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
    messages = [m for m in parsed if m.role != REMOVE]  # applied already; nothing to keep
    conversation_id = first_id(channel_values, fields.conversation_id)
    customer_id = first_id(channel_values, fields.customer_id)
    summary = _optional_text(channel_values, fields.summary)
    inputs: list[Message] = []
    if isinstance(start, dict):
        inputs = _input_messages(start.get(fields.messages))
        conversation_id = first_id(start, fields.conversation_id) or conversation_id
        customer_id = first_id(start, fields.customer_id) or customer_id
        if _optional_text(start, fields.summary) is not None:
            summary = start[fields.summary]
    return State(messages, conversation_id, customer_id, summary, inputs)


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


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


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


class Identified(Protocol):
    """What merging needs of a message: its id (a message whose body is not read has one too)."""

    @property
    def message_id(self) -> str | None: ...


Merged = TypeVar("Merged", bound=Identified)


def merge_messages(current: Sequence[Merged], pending: list[Message]) -> list[Merged | Message]:
    """Apply pending writes like LangGraph's add_messages: a known id replaces, a RemoveMessage
    removes its id (REMOVE_ALL everything before it), anything else appends."""
    merged: list[Merged | Message] = list(current)
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
