"""What the two langgraph-checkpoint-redis layouts share: a thread's documents are listed by
the saver's own search indexes, read as a history (history.py), and deleted together.

Reading a batch of due threads takes four pipelined round trips, however long the threads:
1. the newest root checkpoint in full, the registries of its pending writes, and the list of
   every checkpoint document of the thread, all namespaces (FT.SEARCH); here;
2. of every other document only its time and message ids (RedisJSON paths, server-side), the
   root's pending writes, and the pending writes listed for each subgraph's newest checkpoint;
3. those subgraph writes, and in full the rare document whose ids do not line up with its
   messages (a message without an id); rounds 2 and 3 in documents.py;
4. the bodies of the messages the newest root state no longer holds, by position (assemble.py).
So a conversation of n messages over k checkpoints costs k lists of ids, not k lists of
messages. A thread is a `threads.Thread` while it is read.

Safety design: a document that cannot be read is quarantined and left out; the delete guard
(`delete_many` with a check) then finds its messages unarchived and keeps the thread. The
delete itself is the layout's compare-and-delete script (deleting.py), and every key it may
remove is first shown to the guard.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from datetime import datetime
from typing import Any

import redis

from conversations import conf
from conversations.checkpoints.assemble import assemble
from conversations.checkpoints.base import Candidate, Check, Conversation, Guard, Held, Layout, Unreadable, broken_with_value
from conversations.checkpoints.deleting import held_by_keys, new_documents
from conversations.checkpoints.documents import read_history, read_subgraph_writes
from conversations.checkpoints.held import held_in
from conversations.checkpoints.history import Snapshot
from conversations.checkpoints.jsontext import may_hold_nul
from conversations.checkpoints.messages import parse_time
from conversations.checkpoints.redisjson import (
    Found,
    JsonFound,
    decode,
    escape_tag,
    first,
    index_name,
    members,
    only,
    search_json,
    search_threads,
    thread_query,
    ttl_seconds,
)
from conversations.checkpoints.state import fields_of, message_keys, parse_state
from conversations.checkpoints.threads import Document, Thread, metadata_of, newest_document, root_ns
from conversations.checkpoints.writes import read_pending
from conversations.exceptions import MalformedCheckpoint

logger = logging.getLogger(__name__)

# Documents one FT.SEARCH command lists (with their namespace, id and time).
HISTORY_PAGE = 500


# Where a checkpoint document keeps its time: the savers' own field, and the older spelling.
TIME_PATHS = ("$.checkpoint.ts", "$.checkpoint_ts")


def checkpoint_time(paths: dict[str, list[Any]], what: str) -> datetime:
    """The time of the checkpoint `paths` were read from (with TIME_PATHS among them)."""
    stamp = first(paths, *TIME_PATHS)
    if stamp is None:
        raise MalformedCheckpoint(f"{what} has no time (checkpoint.ts)")
    return parse_time(stamp)


class IndexedLayout(Layout):
    """A langgraph-checkpoint-redis layout. Subclasses say where the newest root checkpoint and
    its pending writes are, which searched keys are their documents, and how to delete."""

    delete_script: str

    def __init__(self) -> None:
        super().__init__()
        # The savers' key prefixes: documents, pending writes and the zsets that register them,
        # the full savers' pointers to their newest checkpoints, and the shallow savers' own
        # registry of pending writes and tracker.
        self.checkpoint = conf.checkpoint_prefix()
        self.write = conf.checkpoint_write_prefix()
        self.zset = conf.write_keys_zset_prefix()
        self.latest = conf.checkpoint_latest_prefix()
        self.registry = conf.write_registry_prefix()
        self.tracker = conf.current_checkpoint_prefix()
        self.messages_path = f"$.checkpoint.channel_values.{self.fields.messages}"
        self._indexes: dict[str, str] = {}

    def root_candidate(
        self, key: str, thread: str, checkpoint_key: str, written_at: datetime, pttl: Any, *, version: str, value: Any = None
    ) -> Candidate:
        """A conversation the probe found by its root namespace's newest checkpoint."""
        return Candidate(
            key=key, thread_id=thread, checkpoint_ns="", checkpoint_key=checkpoint_key, checkpoint_time=written_at,
            ttl_seconds=ttl_seconds(pttl), value=value, version=version,
        )

    @property
    def history_fields(self) -> tuple[tuple[str, str], ...]:
        """What the search returns of each checkpoint document (search_json)."""
        return (("checkpoint_ns", "$.checkpoint_ns"), ("checkpoint_id", "$.checkpoint_id"), ("ts", "$.checkpoint.ts"))

    def index(self, client: redis.Redis, prefix: str) -> str:
        if prefix not in self._indexes:
            self._indexes[prefix] = index_name(client, prefix)
        return self._indexes[prefix]

    # -- what the subclasses say ---------------------------------------------------------

    def newest_id(self, candidate: Candidate) -> str:
        """The id of the newest root checkpoint, as the probe found it."""
        return candidate.checkpoint_key.rsplit(":", 1)[-1]

    @abstractmethod
    def root_registries(self, candidate: Candidate, checkpoint_id: str) -> list[str]:
        """The zsets listing the pending writes of the newest root checkpoint."""

    @abstractmethod
    def is_document(self, thread: str, key: str, fields: dict[str, str]) -> bool:
        """Whether a key the search listed for the thread is one of this layout's documents."""

    @abstractmethod
    def make_guard(self, candidate: Candidate, checkpoint_id: str, registered: int, current: int) -> Guard: ...

    def root_writes(self, writes: list[tuple[str, Any]], checkpoint_id: str) -> list[tuple[str, Any]]:
        """The writes of the registries that belong to the newest root checkpoint."""
        return writes

    @abstractmethod
    def thread_keys(self, conversation: Conversation, documents: list[str], writes: list[str]) -> list[str]:
        """All of the thread's keys, those the script compares first."""

    @abstractmethod
    def written_since_read(self, conversation: Conversation, documents: Found, writes: Found) -> bool:
        """Whether the search found what the script's guard cannot see yet."""

    # -- load ----------------------------------------------------------------------------

    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Unreadable]]:
        broken: list[Unreadable] = []
        threads = self._read_newest(client, due, broken)
        read_history(client, threads, broken, self.name, self.messages_path)
        read_subgraph_writes(client, threads, broken, self.name, self.index(client, self.write), self.fields.messages)
        conversations = assemble(client, threads, broken, self.name, self.messages_path)
        return conversations, broken

    def _read_newest(self, client: redis.Redis, due: list[Candidate], broken: list[Unreadable]) -> list[Thread]:
        """Round 1, and the newest root state parsed with its pending writes."""
        pipe = client.pipeline(transaction=False)
        registries = []
        for candidate in due:
            pipe.execute_command("JSON.GET", candidate.checkpoint_key)
            names = self.root_registries(candidate, self.newest_id(candidate))
            registries.append(len(names))
            for name in names:
                pipe.zrange(name, 0, -1)
        replies = iter(pipe.execute(raise_on_error=False))
        # Every document of the thread but the newest root one, which is read whole.
        queries = [
            "%s -@checkpoint_id:{%s}" % (thread_query(c.thread_id), escape_tag(self.newest_id(c))) for c in due
        ]
        found = search_json(client, self.index(client, self.checkpoint), queries, self.history_fields, HISTORY_PAGE)

        read: list[tuple[Candidate, Any, list[str], JsonFound | None]] = []
        for candidate, count, documents in zip(due, registries, found):
            raw = next(replies)
            write_keys = []
            for _ in range(count):
                write_keys += [decode(k) or "" for k in members(next(replies))]
            if raw is None:
                continue  # replaced or removed since the probe; the next run sees the new one
            read.append((candidate, raw, write_keys, documents))

        pipe = client.pipeline(transaction=False)
        for _, _, write_keys, _ in read:
            for key in write_keys:
                pipe.execute_command("JSON.GET", key)
        write_replies = iter(pipe.execute(raise_on_error=False))

        threads = []
        for candidate, raw, write_keys, documents in read:
            writes = [(key, next(write_replies)) for key in write_keys]
            try:
                thread = self._newest(candidate, raw, writes, documents)
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, candidate.checkpoint_key, str(exc), self.name))
                continue
            threads.append(thread)
        return threads

    def _newest(self, candidate: Candidate, raw: Any, writes: list[tuple[str, Any]], documents: JsonFound | None) -> Thread:
        doc, checkpoint, checkpoint_id = newest_document(raw)
        state = parse_state(checkpoint.get("channel_values"), self.fields)
        current = self.root_writes(writes, checkpoint_id)
        pending = read_pending(current, self.fields.messages, fields_of(self.fields))
        state.fill_from_pending(pending.fields, self.fields)
        state.fill_from(metadata_of(doc.get("metadata")), self.fields)
        if candidate.checkpoint_time is None:
            raise MalformedCheckpoint("the newest checkpoint has no time (checkpoint.ts)")
        scope = f"{self.name}:{candidate.thread_id}"
        newest = Snapshot(candidate.checkpoint_key, "", checkpoint_id, candidate.checkpoint_time, tuple(message_keys(state.messages, scope)))
        # For the delete guard: the newest document's messages, its input, and any message in
        # its other channels.
        held = Held(
            {m.message_id for m in state.messages if m.message_id},
            {(m.role, m.content) for m in state.messages if not m.message_id},
        )
        held_in([m for k, m in checkpoint["channel_values"].items() if k != self.fields.messages], held)
        return Thread(
            candidate=candidate,
            state=state,
            checkpoint_id=checkpoint_id,
            newest=newest,
            write_keys=[k for k, _ in writes],
            guard=self.make_guard(candidate, checkpoint_id, len(writes), len(current)),
            documents=self._documents(candidate, documents or []),  # None: the index cannot be asked; the newest state alone
            pending={"": pending},
            suspicious=may_hold_nul(raw if isinstance(raw, bytes) else None) or pending.may_hold_nul,
            held=held,
            read={candidate.checkpoint_key},
            listed={candidate.checkpoint_key, *(key for key, _ in documents or [])},
            scope=scope,
        )

    def _documents(self, candidate: Candidate, found: JsonFound) -> list[Document]:
        """The thread's other documents among those the search listed. The key names the thread
        exactly (the TAG query also matches other cases, and the values of a comma-separated
        thread id)."""
        documents = []
        for key, values in found:
            fields = {"checkpoint_ns": only(values.get("checkpoint_ns")), "checkpoint_id": only(values.get("checkpoint_id"))}
            if key != candidate.checkpoint_key and self.is_document(candidate.thread_id, key, fields):
                documents.append(Document(key, root_ns(fields["checkpoint_ns"]), fields["checkpoint_id"], values))
        return documents

    # -- delete --------------------------------------------------------------------------

    def delete_many(self, client: redis.Redis, conversations: list[Conversation], check: Check | None = None) -> list[bool]:
        threads = [c.candidate.thread_id for c in conversations]
        documents = search_threads(client, self.index(client, self.checkpoint), threads)
        writes = search_threads(client, self.index(client, self.write), threads)
        chosen: list[tuple[int, list[str], Found, Found]] = []
        for n, (conversation, found, written) in enumerate(zip(conversations, documents, writes)):
            if (
                not listed(conversation, found, written)
                or new_documents(conversation, found or [])
                or self.written_since_read(conversation, found or [], written or [])
            ):
                continue
            chosen.append((n, self.thread_keys(conversation, [k for k, _ in found or []], [k for k, _ in written or []]), found or [], written or []))
        if check is not None and chosen:
            held = held_by_keys(client, [(conversations[n], found, written) for n, _, found, written in chosen])
            allowed = check([(conversations[n], h) for (n, _, _, _), h in zip(chosen, held)])
            chosen = [c for c, ok in zip(chosen, allowed) if ok]
        script = client.register_script(self.delete_script)
        pipe = client.pipeline(transaction=False)
        for n, keys, _, _ in chosen:
            script(keys=keys, args=conversations[n].guard.args(), client=pipe)
        results = dict(zip((n for n, _, _, _ in chosen), pipe.execute()))
        # 0: changed since it was read; -1: the thread expired on its own meanwhile
        return [results.get(n, 0) != 0 for n in range(len(conversations))]


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
