"""What every checkpoint layout hands the archiver, and the Redis helpers they share.

A layout finds candidate conversations with SCAN (`scan_pattern`), tells their age cheaply
(`probe`), reads the due ones in full (`load`) and removes a conversation's keys with a
compare-and-delete (`delete`) that does nothing if the bot wrote to it after we read it.
All reads of a batch go through pipelines: round trips grow with the depth of the work,
never with the number of conversations.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis

from conversations import conf
from conversations.checkpoints.messages import (
    START_CHANNEL,
    Message,
    State,
    check_storable,
    may_hold_nul,
    merge_messages,
    parse_json,
)
from conversations.exceptions import ArchiverError, MalformedCheckpoint

logger = logging.getLogger(__name__)

EMPTY_NS = "__empty__"  # how langgraph-checkpoint-redis spells the root namespace in keys and fields
# How many keys one UNLINK gets inside the delete scripts (Lua's unpack has a limit).
UNLINK_CHUNK = 500
SEARCH_PAGE = 1000


@dataclass
class Candidate:
    """A conversation the scan found, with what it takes to decide whether it is due."""

    key: str  # the key the scan returned
    thread_id: str
    checkpoint_ns: str
    checkpoint_key: str  # where its newest checkpoint document is
    checkpoint_time: datetime | None
    ttl_seconds: float | None  # remaining life; None when the key never expires


@dataclass
class Conversation:
    """A due conversation, read in full."""

    candidate: Candidate
    source: str
    checkpoint_id: str
    state: State
    timestamps: list[datetime]
    guard: list[str]  # what the delete script compares before it removes anything
    scope: str  # keeps id-less messages of different threads apart

    @property
    def messages(self) -> list[Message]:
        return self.state.messages

    @property
    def conversation_id(self) -> str:
        return self.state.conversation_id or self.candidate.thread_id


@dataclass
class Broken:
    """A value that could not be read; its raw bytes go to quarantine."""

    key: str
    error: str
    source: str = ""
    redis_type: str = ""
    raw_value: bytes = b""
    counted: bool = True  # False for conditions worth a warning but nothing to keep
    extra_keys: list[str] = field(default_factory=list)


class Layout(ABC):
    name: str

    def __init__(self) -> None:
        self.fields = {
            "messages": conf.get("MESSAGES_FIELD"),
            "conversation_id": conf.get("CONVERSATION_ID_FIELD"),
            "customer_id": conf.get("CUSTOMER_ID_FIELD"),
            "summary": conf.get("SUMMARY_FIELD"),
        }

    @abstractmethod
    def scan_pattern(self) -> str: ...

    def accepts(self, key: str) -> bool:
        """Whether a key the scan matched really is one of this layout's conversations."""
        return True

    @abstractmethod
    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Broken]]: ...

    @abstractmethod
    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Broken]]: ...

    @abstractmethod
    def delete_many(self, client: redis.Redis, conversations: list[Conversation]) -> list[bool]:
        """Remove each conversation's keys unless it changed since `load` (True where removed),
        with one pipeline for the whole batch."""


class IndexedLayout(Layout):
    """The langgraph-checkpoint-redis layouts, whose keys are found through the saver's own
    search indexes (`checkpoint` and `write` name them) and removed by `delete_script`, which
    compares the conversation's guard before it unlinks anything."""

    checkpoint: str
    write: str
    delete_script: str

    @abstractmethod
    def thread_keys(self, conversation: Conversation, documents: list[str], writes: list[str]) -> list[str]:
        """All of the thread's keys, those the script compares first."""

    @abstractmethod
    def written_since_read(self, conversation: Conversation, documents: Found, writes: Found) -> bool:
        """Whether the search found what the script's guard cannot see yet."""

    def delete_many(self, client: redis.Redis, conversations: list[Conversation]) -> list[bool]:
        threads = [c.candidate.thread_id for c in conversations]
        documents = search_threads(client, self.checkpoint, threads)
        writes = search_threads(client, self.write, threads)
        script = client.register_script(self.delete_script)
        pipe = client.pipeline(transaction=False)
        changed = []
        for conversation, found, written in zip(conversations, documents, writes):
            changed.append(
                not listed(conversation, found, written)
                or self.written_since_read(conversation, found or [], written or [])
            )
            if found is not None and written is not None and not changed[-1]:
                keys = self.thread_keys(conversation, [k for k, _ in found], [k for k, _ in written])
                script(keys=keys, args=conversation.guard, client=pipe)
        results = iter(pipe.execute())
        return [not c and next(results) != 0 for c in changed]  # -1: the thread expired on its own meanwhile


# --- helpers shared by the layouts -------------------------------------------------------


def decode(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def ttl_seconds(pttl: Any) -> float | None:
    """PTTL's answer as seconds; None for a key without expiry (-1) or on an error."""
    if isinstance(pttl, int) and pttl >= 0:
        return pttl / 1000
    return None


def json_paths(raw: Any) -> dict[str, list[Any]] | None:
    """The answer of a multi-path JSON.GET: {path: [matches]}; None when the key is missing."""
    if raw is None or isinstance(raw, Exception):
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None


def first(paths: dict[str, list[Any]] | None, *names: str) -> Any:
    for name in names:
        matches = (paths or {}).get(name) or []
        if matches and matches[0] is not None:
            return matches[0]
    return None


def raw_value(client: redis.Redis, key: str) -> tuple[str, bytes]:
    """A key's type and its value as bytes, for quarantine: GET, JSON.GET, or DUMP for the rest."""
    kind = decode(client.type(key)) or "none"
    if kind == "string":
        return kind, client.get(key) or b""
    if kind == "ReJSON-RL":
        return kind, client.execute_command("JSON.GET", key) or b""
    return kind, client.dump(key) or b""


def broken_with_value(client: redis.Redis, key: str, error: str) -> Broken:
    kind, value = raw_value(client, key)
    return Broken(key=key, error=error, redis_type=kind, raw_value=value)


def pending_messages(
    write_docs: list[tuple[str, Any]], fields: dict[str, str]
) -> tuple[list[Message], dict[str, Any], bool]:
    """Messages and state fields sitting in pending writes, in write order.

    Only JSON-typed writes are read; a messages write in any other encoding (msgpack, pickle)
    is refused, since reading it would mean running a deserializer that can execute code.
    """
    from base64 import b64decode
    from binascii import Error as Base64Error

    from conversations.checkpoints.messages import parse_message, unapplied

    messages: list[Message] = []
    state_fields: dict[str, Any] = {}
    suspicious = False
    wanted = {fields["conversation_id"], fields["customer_id"], fields["summary"]}
    for key, raw in write_docs:
        if raw is None:
            continue  # expired or removed since the registry listed it
        doc = parse_json(raw, f"pending write {key}")
        if not isinstance(doc, dict):
            raise MalformedCheckpoint(f"pending write {key} is not an object")
        channel = doc.get("channel")
        if channel != fields["messages"] and channel not in wanted:
            continue
        if START_CHANNEL in str(doc.get("task_path", "")).split(", "):
            continue  # the input step's writes repeat the input, which parse_state already read
        if doc.get("type") != "json":
            raise MalformedCheckpoint(
                f"pending write {key} to {channel!r} is encoded as {doc.get('type')!r}; only JSON is read"
            )
        try:
            blob = b64decode(doc.get("blob") or "", validate=True)
        except (Base64Error, ValueError, TypeError):
            raise MalformedCheckpoint(f"pending write {key} has a blob that is not base64") from None
        suspicious = suspicious or may_hold_nul(blob)
        value = parse_json(blob, f"pending write {key}")
        if channel == fields["messages"]:
            items = value if isinstance(value, list) else [value]
            messages.extend(unapplied(parse_message(item, i)) for i, item in enumerate(items))
        else:
            state_fields[channel] = value
    return messages, state_fields, suspicious


def apply_pending(
    state: State, messages: list[Message], state_fields: dict[str, Any], fields: dict[str, str], check: bool
) -> None:
    """Merge pending writes into the state; `check` when any raw JSON may hold a NUL."""
    state.messages = merge_messages(state.messages, messages)
    for attr in ("conversation_id", "customer_id", "summary"):
        value = state_fields.get(fields[attr])
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            setattr(state, attr, str(value))
    if check:
        check_storable(state, state.messages)


def entry_times(
    messages: list[Message], newest: datetime, chain: list[tuple[datetime, int, str | None]]
) -> list[datetime]:
    """When each message entered the conversation, as well as the checkpoints show it.

    `chain` lists the surviving root checkpoints from the newest back: (time, number of
    messages, id of its last message). A checkpoint holds the first n messages of the current
    state when its last message is the current state's n-th; walking back while that holds,
    each message gets the time of the earliest checkpoint that held it. The walk stops at the
    first checkpoint that does not fit (the bot trimmed or rewrote its messages): what came
    before cannot be matched safely. A message's own timestamp wins; pending messages and
    anything unmatched get the newest checkpoint's time. Times never go backwards.
    """
    times = [newest] * len(messages)
    for ts, count, last_id in chain:
        if count <= 0 or count > len(messages) or messages[count - 1].message_id != last_id:
            break
        for i in range(count):
            times[i] = ts
    for i, message in enumerate(messages):
        if message.own_timestamp is not None:
            times[i] = message.own_timestamp
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            times[i] = times[i - 1]
    return times


_TAG_SPECIAL = re.compile(r"([^\w\u0080-\U0010ffff])")


def escape_tag(value: str) -> str:
    """Escape a value for a RediSearch TAG query such as @thread_id:{...}."""
    return _TAG_SPECIAL.sub(r"\\\1", value)


Found = list[tuple[str, dict[str, str]]]  # (key, returned fields)


def _search_page(reply: Any) -> tuple[int, Found]:
    found: Found = []
    if isinstance(reply, dict):  # RESP3
        for result in reply[b"results"]:
            fields = result.get(b"extra_attributes") or {}
            found.append((decode(result[b"id"]) or "", {decode(k) or "": decode(v) or "" for k, v in fields.items()}))
        return reply[b"total_results"], found
    items, i = reply[1:], 0
    while i < len(items):
        key, fields = decode(items[i]) or "", {}
        if i + 1 < len(items) and isinstance(items[i + 1], list):
            pairs = items[i + 1]
            fields = {decode(pairs[j]) or "": decode(pairs[j + 1]) or "" for j in range(0, len(pairs) - 1, 2)}
            i += 1
        found.append((key, fields))
        i += 1
    return reply[0], found


def search_many(client: redis.Redis, index: str, queries: list[str], fields: tuple[str, ...] = ()) -> list[Found | None]:
    """What each FT.SEARCH query matches: (key, {field: value}) for the `fields` asked for, or
    None for a query the index refuses: RediSearch cannot parse the tags of some thread ids the
    savers accept (empty, "_", control characters), and one such thread must not stop the run.
    First pages in one pipeline; the rare longer results paged one by one."""
    shape = ["RETURN", len(fields), *fields] if fields else ["NOCONTENT"]

    def page(target: Any, query: str, offset: int) -> Any:
        return target.execute_command("FT.SEARCH", index, query, *shape, "LIMIT", offset, SEARCH_PAGE, "DIALECT", 2)

    pipe = client.pipeline(transaction=False)
    for query in queries:
        page(pipe, query, 0)
    replies = pipe.execute(raise_on_error=False)
    results: list[Found | None] = []
    for query, reply in zip(queries, replies):
        if isinstance(reply, redis.ResponseError):
            if "no such index" in str(reply).lower():
                raise ArchiverError(
                    f"Redis has no search index {index!r}, which langgraph-checkpoint-redis creates in its "
                    "setup(); check REDIS_URL and the ARCHIVER key prefixes."
                ) from None
            results.append(None)
            continue
        total, found = _search_page(reply)
        offset = SEARCH_PAGE
        while offset < total:
            total, more = _search_page(page(client, query, offset))
            found += more
            offset += SEARCH_PAGE
            if not more:
                break
        results.append(found)
    return results


def thread_query(thread: str) -> str:
    return "@thread_id:{%s}" % escape_tag(thread)


# What the deletes ask the search index about each document: whose it is and how new.
DOCUMENT_FIELDS = ("thread_id", "checkpoint_ns", "checkpoint_id")


def search_threads(client: redis.Redis, index: str, threads: list[str]) -> list[Found | None]:
    """Each thread's own documents in `index`, with DOCUMENT_FIELDS; None where the index
    cannot be asked (see search_many): the caller then leaves the thread alone.

    The savers' TAG index matches without case and splits values at commas, so a query for
    "Conv-A" also returns "conv-a"'s documents and one for "x" returns "x,y"'s: only documents
    whose thread_id is exactly the thread are kept (deleting the others lost conversations).
    """
    found = search_many(client, index, [thread_query(t) for t in threads], DOCUMENT_FIELDS)
    return [None if f is None else [(key, fields) for key, fields in f if fields.get("thread_id") == t] for t, f in zip(threads, found)]


def listed(conversation: Conversation, documents: Found | None, writes: Found | None) -> bool:
    """Whether the search listed the conversation's own newest checkpoint: only then can all of
    its thread's keys be found. RediSearch cannot match some tags the savers accept (a comma,
    whitespace around them, control characters, an empty one); deleting what is known of such a
    thread would leave the rest behind for good, so it stays whole, archived, until it expires."""
    if documents is not None and writes is not None and any(k == conversation.candidate.checkpoint_key for k, _ in documents):
        return True
    logger.warning(
        "The search index does not list the documents of thread %r; it stays in Redis (archived) until it expires",
        conversation.candidate.thread_id,
    )
    return False
