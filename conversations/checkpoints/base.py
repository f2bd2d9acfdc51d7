"""What every checkpoint layout hands the archiver.

A layout finds candidate conversations with SCAN (`scan_pattern`), tells their age cheaply
(`probe`), reads the due ones in full (`load`) and removes a conversation's keys with a
compare-and-delete (`delete_many`) that does nothing if the bot wrote to it after we read it.
All reads of a batch go through pipelines: round trips grow with the depth of the work,
never with the number of conversations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from conversations import conf
from conversations.checkpoints.client import redis_errors
from conversations.checkpoints.history import Entry
from conversations.checkpoints.messages import Message
from conversations.checkpoints.redisjson import decode, raw_value
from conversations.checkpoints.state import State


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
    source: str  # the name of the layout that read it, always given where it is made
    redis_type: str = ""
    raw_value: bytes = b""
    quarantine: bool = True  # keep its raw value; False for conditions worth a warning but nothing to keep


def broken_with_value(client: redis.Redis, key: str, error: str, source: str) -> Unreadable:
    """An Unreadable with the key's raw value as it is now (`source`: the layout's name)."""
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

    def scan(self, client: redis.Redis, size: int) -> Iterator[list[str]]:
        """This layout's conversation keys, `size` at a time, by SCAN (never KEYS)."""
        batch: list[str] = []
        seen_in_batch: set[str] = set()
        with redis_errors():
            for raw in client.scan_iter(match=self.scan_pattern(), count=conf.scan_count()):
                key = decode(raw)
                if key is None or key in seen_in_batch or not self.accepts(key):
                    continue
                batch.append(key)
                seen_in_batch.add(key)
                if len(batch) >= size:
                    yield batch
                    batch, seen_in_batch = [], set()
            if batch:
                yield batch

    @abstractmethod
    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Unreadable]]: ...

    @abstractmethod
    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Unreadable]]: ...

    @abstractmethod
    def delete_many(self, client: redis.Redis, conversations: list[Conversation], check: Check | None = None) -> list[bool]:
        """Remove each conversation's keys unless it changed since `load` (True where removed),
        with one pipeline for the whole batch; with a `check`, only those it lets go."""
