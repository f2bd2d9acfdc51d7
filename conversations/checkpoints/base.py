"""What every checkpoint layout hands the archiver.

A layout finds candidate conversations with SCAN (`scan_pattern`), tells their age cheaply
(`probe`), reads the due ones in full (`load`) and removes a conversation's keys with a
compare-and-delete (`delete_many`) that does nothing if the bot wrote to it after we read it.
All reads of a batch go through pipelines: round trips grow with the depth of the work,
never with the number of conversations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from conversations import conf
from conversations.checkpoints.history import Entry
from conversations.checkpoints.messages import KNOWN_ROLES, LC_CLASSES, REMOVE, Message, State, parse_message
from conversations.checkpoints.redisjson import raw_value
from conversations.conf import Fields
from conversations.exceptions import MalformedCheckpoint


@dataclass
class Candidate:
    """A conversation the scan found, with what it takes to decide whether it is due."""

    key: str  # the key the scan returned
    thread_id: str
    checkpoint_ns: str
    checkpoint_key: str  # where its newest checkpoint document is
    checkpoint_time: datetime | None
    ttl_seconds: float | None  # remaining life; None when the key never expires
    value: Any = None  # what the probe already read and load reuses (the plain layout's value)
    # Changes whenever the bot writes to the conversation (the live mirror compares it).
    version: str = ""
    # Read only the checkpoints written from this time on (the live mirror's watermark: what
    # came before is archived); the newest root checkpoint, and each subgraph's newest, always.
    read_since: datetime | None = None


@dataclass(frozen=True)
class Guard:
    """What a delete script compares before it removes anything: the newest checkpoint that was
    archived (its key, its id, or a digest of its value) and, for the savers, how many pending
    writes were registered when it was read."""

    newest: str
    writes: int | None = None
    current: int = 0  # of the registered writes, those of the newest checkpoint

    def args(self) -> list[str]:
        return [self.newest] if self.writes is None else [self.newest, str(self.writes)]


@dataclass
class Held:
    """The messages that a conversation's keys hold, as the delete guard finds them: ids, and
    (role, text) for messages without one."""

    ids: set[str] = field(default_factory=set)
    anonymous: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Conversation:
    """A due conversation, read in full: its facts (from the newest root state) and every
    message its surviving checkpoints hold (history.py)."""

    candidate: Candidate
    source: str
    checkpoint_id: str  # the newest root checkpoint's
    state: State
    entries: list[Entry]
    guard: Guard
    scope: str  # keeps id-less messages of different threads apart
    # For the delete guard: the messages of the documents `load` read, by other paths than
    # the history's, and which documents those are; and every document it found.
    held: Held = field(default_factory=Held)
    read: frozenset[str] = frozenset()
    found: frozenset[str] | None = None  # None: not tracked (the plain layout)

    @property
    def messages(self) -> list[Message]:
        return [e.message for e in self.entries]

    @property
    def conversation_id(self) -> str:
        return self.state.conversation_id or self.candidate.thread_id


@dataclass
class Unreadable:
    """A value that could not be read; its raw bytes go to quarantine."""

    key: str
    error: str
    source: str = ""
    redis_type: str = ""
    raw_value: bytes = b""
    quarantine: bool = True  # keep its raw value; False for conditions worth a warning but nothing to keep


def broken_with_value(client: redis.Redis, key: str, error: str, source: str = "") -> Unreadable:
    kind, value = raw_value(client, key)
    return Unreadable(key=key, error=error, source=source, redis_type=kind, raw_value=value)


# The delete guard: told what each conversation's keys hold, it answers for each whether the
# keys may go (every message they hold is committed in the archive).
Check = Callable[[list[tuple[Conversation, Held]]], list[bool]]


class Layout(ABC):
    name: str

    def __init__(self) -> None:
        self.fields = conf.fields()

    @abstractmethod
    def scan_pattern(self) -> str: ...

    def accepts(self, key: str) -> bool:
        """Whether a key the scan matched really is one of this layout's conversations."""
        return True

    @abstractmethod
    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Unreadable]]: ...

    @abstractmethod
    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Unreadable]]: ...

    @abstractmethod
    def delete_many(self, client: redis.Redis, conversations: list[Conversation], check: Check | None = None) -> list[bool]:
        """Remove each conversation's keys unless it changed since `load` (True where removed),
        with one pipeline for the whole batch; with a `check`, only those it lets go."""


def fields_of(fields: Fields) -> set[str]:
    """The state channels besides the messages whose pending writes matter."""
    return {*fields.conversation_id, *fields.customer_id, fields.summary}


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
        if isinstance(message_id, str) and message_id:
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
