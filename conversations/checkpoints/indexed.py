"""What the two langgraph-checkpoint-redis layouts share: a thread's documents are listed by
the saver's own search indexes, read as a history (history.py), and deleted together.

Reading a batch of due threads takes four pipelined round trips, however long the threads:
1. the newest root checkpoint in full, the registries of its pending writes, and the list of
   every checkpoint document of the thread, all namespaces (FT.SEARCH);
2. of every other document only its time and message ids (RedisJSON paths, server-side), the
   root's pending writes, and the pending writes listed for each subgraph's newest checkpoint;
3. those subgraph writes, and in full the rare document whose ids do not line up with its
   messages (a message without an id);
4. the bodies of the messages the newest root state no longer holds, by position.
So a conversation of n messages over k checkpoints costs k lists of ids, not k lists of
messages.

Safety design: a document that cannot be read is quarantined and left out; the delete guard
(`delete_many` with a check) then finds its messages unarchived and keeps the thread. The
delete itself is the layout's compare-and-delete script, and every key it may remove is
first shown to the guard.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import redis

from conversations import conf
from conversations.checkpoints import history
from conversations.checkpoints.base import (
    Candidate,
    Check,
    Conversation,
    Guard,
    Held,
    Layout,
    Unreadable,
    broken_with_value,
)
from conversations.checkpoints.held import held_in
from conversations.checkpoints.history import Live, Ref, Snapshot
from conversations.checkpoints.jsontext import may_hold_nul, parse_json
from conversations.checkpoints.messages import REMOVE, Message, parse_message, parse_time
from conversations.checkpoints.redisjson import (
    Found,
    JsonFound,
    decode,
    escape_tag,
    index_name,
    json_paths,
    search_json,
    search_many,
    search_threads,
    thread_query,
)
from conversations.checkpoints.state import State, check_storable, fields_of, message_keys, parse_state
from conversations.checkpoints.writes import Pending, decode_value, read_pending
from conversations.exceptions import MalformedCheckpoint

logger = logging.getLogger(__name__)

EMPTY_NS = "__empty__"  # how langgraph-checkpoint-redis spells the root namespace in keys and fields
# How many keys one UNLINK gets inside the delete scripts (Lua's unpack has a limit).
UNLINK_CHUNK = 500
# Documents asked about in one pipeline while a batch's histories are read (bounds memory).
HISTORY_CHUNK = 500
# Documents one FT.SEARCH command lists (with their namespace, id and time).
HISTORY_PAGE = 500
# Documents one JSON.MGET asks for their message ids: no command long, even for documents of
# hundreds of messages.
MGET_CHUNK = 20
WRITE_FIELDS = ("thread_id", "checkpoint_ns", "checkpoint_id", "channel")
# What the delete guard reads of a checkpoint document `load` did not read: the id of every
# message in any of the state's lists, not only the messages channel (a recursive `..` path
# would cost the server as much as the whole document), and a run's input.
GUARD_IDS = "$.checkpoint.channel_values.*[*].kwargs.id"
GUARD_INPUT = "$.checkpoint.channel_values.__start__"  # a run's input, messages without ids


def root_ns(ns: str | None) -> str:
    """The namespace as the archive keeps it: "" for the root, which the savers spell
    `__empty__` (the async shallow saver "" in its fields)."""
    return "" if ns in (None, "", EMPTY_NS) else ns


@dataclass
class Document:
    """A checkpoint document of the thread other than the newest root one, as the search
    listed it: its namespace and id, and the matches of its time and message paths."""

    key: str
    ns: str
    checkpoint_id: str
    found: dict[str, list[Any]]


@dataclass
class Thread:
    """One due thread while it is being read."""

    candidate: Candidate
    state: State
    checkpoint_id: str
    newest: Snapshot  # the newest root checkpoint
    write_keys: list[str]  # registered writes of the newest root checkpoint
    guard: Guard
    documents: list[Document] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    pending: dict[str, Pending] = field(default_factory=dict)  # by namespace
    suspicious: bool = False  # some JSON read may hold a NUL
    # For the delete guard, read apart from the history: what the documents read here hold.
    held: Held = field(default_factory=Held)
    read: set[str] = field(default_factory=set)  # the documents whose messages `held` counts
    listed: set[str] = field(default_factory=set)  # every document the search listed, and the newest


class IndexedLayout(Layout):
    """A langgraph-checkpoint-redis layout. Subclasses say where the newest root checkpoint and
    its pending writes are, which searched keys are their documents, and how to delete."""

    delete_script: str

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint = conf.checkpoint_prefix()
        self.write = conf.checkpoint_write_prefix()
        self.messages_path = f"$.checkpoint.channel_values.{self.fields.messages}"
        self._indexes: dict[str, str] = {}

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
        self._read_history(client, threads, broken)
        self._read_subgraph_writes(client, threads, broken)
        conversations = self._assemble(client, threads, broken)
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
                write_keys += [decode(k) or "" for k in _members(next(replies))]
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
        if isinstance(raw, Exception):
            raise MalformedCheckpoint(f"the checkpoint is not a JSON document ({raw})")
        doc = parse_json(raw, "the checkpoint")
        if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), dict):
            raise MalformedCheckpoint("the document has no 'checkpoint' object")
        checkpoint = doc["checkpoint"]
        checkpoint_id = str(doc.get("checkpoint_id") or checkpoint.get("id") or "")
        if not checkpoint_id:
            raise MalformedCheckpoint("the checkpoint has no checkpoint_id")
        state = parse_state(checkpoint.get("channel_values"), self.fields)
        current = self.root_writes(writes, checkpoint_id)
        pending = read_pending(current, self.fields.messages, fields_of(self.fields))
        state.fill_from_pending(pending.fields, self.fields)
        state.fill_from(_metadata(doc.get("metadata")), self.fields)
        if candidate.checkpoint_time is None:
            raise MalformedCheckpoint("the newest checkpoint has no time (checkpoint.ts)")
        scope = f"{self.name}:{candidate.thread_id}"
        newest = Snapshot(candidate.checkpoint_key, "", checkpoint_id, candidate.checkpoint_time, tuple(message_keys(state.messages, scope)))
        thread = Thread(
            candidate=candidate,
            state=state,
            checkpoint_id=checkpoint_id,
            newest=newest,
            write_keys=[k for k, _ in writes],
            guard=self.make_guard(candidate, checkpoint_id, len(writes), len(current)),
            suspicious=may_hold_nul(raw if isinstance(raw, bytes) else None) or pending.may_hold_nul,
        )
        thread.pending[""] = pending
        # For the delete guard: the newest document's messages, its input, and any message in
        # its other channels.
        thread.held.ids.update(m.message_id for m in state.messages if m.message_id)
        thread.held.anonymous.update((m.role, m.content) for m in state.messages if not m.message_id)
        held_in([m for k, m in checkpoint["channel_values"].items() if k != self.fields.messages], thread.held)
        thread.read.add(candidate.checkpoint_key)
        thread.listed = {candidate.checkpoint_key, *(key for key, _ in documents or [])}
        for key, values in documents or []:  # None: the index cannot be asked; the newest state alone
            # The key names the thread exactly (the TAG query also matches other cases, and
            # the values of a comma-separated thread id).
            fields = {"checkpoint_ns": _only(values.get("checkpoint_ns")), "checkpoint_id": _only(values.get("checkpoint_id"))}
            if key != candidate.checkpoint_key and self.is_document(candidate.thread_id, key, fields):
                thread.documents.append(Document(key, root_ns(fields["checkpoint_ns"]), fields["checkpoint_id"], values))
        return thread

    def _read_history(self, client: redis.Redis, threads: list[Thread], broken: list[Unreadable]) -> None:
        """A snapshot of every document of the thread from what the search returned of it (its
        time and message ids), and for the rare one whose messages are not all LangChain
        envelopes with ids, from its messages read whole, HISTORY_CHUNK documents a pipeline.
        Equal ids share one string, so memory follows the distinct messages."""
        as_key = _Keys()
        whole: list[tuple[Thread, Document, datetime]] = []
        dated: list[tuple[Thread, Document, datetime]] = []
        for thread in threads:
            timed = []
            for document in thread.documents:
                try:
                    if not document.found.get("ts"):
                        raise MalformedCheckpoint("the checkpoint has no time (checkpoint.ts)")
                    timed.append((thread, document, parse_time(document.found["ts"][0])))
                except (MalformedCheckpoint, ValueError) as exc:
                    broken.append(broken_with_value(client, document.key, str(exc), self.name))
            dated += _since(timed, thread.candidate.read_since)
        # The message ids of MGET_CHUNK documents a JSON.MGET, and each one's number of messages.
        ids_path = f"{self.messages_path}[*].kwargs.id"
        for chunk in _chunks(dated, HISTORY_CHUNK):
            pipe = client.pipeline(transaction=False)
            parts = _chunks(chunk, MGET_CHUNK)
            for part in parts:
                pipe.execute_command("JSON.MGET", *(document.key for _, document, _ in part), ids_path)
                for _, document, _ in part:
                    pipe.execute_command("JSON.ARRLEN", document.key, self.messages_path)
            replies = iter(pipe.execute(raise_on_error=False))
            for part in parts:
                id_lists = next(replies)
                lengths = [next(replies) for _ in part]
                for n, (thread, document, time) in enumerate(part):
                    ids, length = _mget(id_lists, n), lengths[n]
                    if ids is None:
                        continue  # expired since the search listed it (the guard reads what is left)
                    count = length[0] if isinstance(length, list) and length and isinstance(length[0], int) else 0
                    keys = as_key.of(ids)
                    # Every message of a LangGraph checkpoint is an lc envelope with an id;
                    # a document with anything else is read whole.
                    if keys is not None and len(keys) == count:
                        thread.held.ids.update(ids)  # for the delete guard, apart from the history
                        thread.read.add(document.key)
                        thread.snapshots.append(Snapshot(document.key, document.ns, document.checkpoint_id, time, keys))
                    else:
                        whole.append((thread, document, time))
        for chunk in _chunks(whole, HISTORY_CHUNK):
            pipe = client.pipeline(transaction=False)
            for _, document, _ in chunk:
                pipe.execute_command("JSON.GET", document.key, self.messages_path)
            for (thread, document, time), raw in zip(chunk, pipe.execute(raise_on_error=False)):
                try:
                    if raw is None:
                        continue
                    if isinstance(raw, Exception):
                        raise MalformedCheckpoint(f"the checkpoint is not a JSON document ({raw})")
                    lists = parse_json(raw, "the checkpoint's messages")
                    items = lists[0] if isinstance(lists, list) and lists and isinstance(lists[0], list) else []
                    messages = [m for m in (parse_message(item, i) for i, item in enumerate(items)) if m.role != REMOVE]
                except (MalformedCheckpoint, ValueError) as exc:
                    broken.append(broken_with_value(client, document.key, str(exc), self.name))
                    continue
                keys = tuple(message_keys(messages, f"{self.name}:{thread.candidate.thread_id}"))
                thread.snapshots.append(Snapshot(document.key, document.ns, document.checkpoint_id, time, keys))
                thread.suspicious = thread.suspicious or may_hold_nul(raw)
                held_in(items, thread.held)
                thread.read.add(document.key)

    def _read_subgraph_writes(self, client: redis.Redis, threads: list[Thread], broken: list[Unreadable]) -> None:
        """The pending writes of each subgraph namespace's newest checkpoint, found through the
        write index (an interrupted subgraph's finished task keeps its messages there)."""
        asked: list[tuple[Thread, str, str]] = []
        for thread in threads:
            for ns, newest in _newest_by_ns(thread.snapshots).items():
                if ns:
                    asked.append((thread, ns, newest.checkpoint_id))
        if not asked:
            return
        queries = ["@thread_id:{%s} @checkpoint_id:{%s}" % (escape_tag(t.candidate.thread_id), escape_tag(cid)) for t, _, cid in asked]
        found = search_many(client, self.index(client, self.write), queries, WRITE_FIELDS)
        keys = [
            [k for k, f in (writes or []) if f.get("thread_id") == t.candidate.thread_id and root_ns(f.get("checkpoint_ns")) == ns]
            for (t, ns, _), writes in zip(asked, found)
        ]
        pipe = client.pipeline(transaction=False)
        for listed in keys:
            for key in listed:
                pipe.execute_command("JSON.GET", key)
        replies = iter(pipe.execute(raise_on_error=False))
        for (thread, ns, _), listed in zip(asked, keys):
            writes = [(key, next(replies)) for key in listed]
            try:
                thread.pending[ns] = read_pending(writes, self.fields.messages, set())
            except (MalformedCheckpoint, ValueError) as exc:  # quarantined; the delete guard judges the rest
                broken.append(broken_with_value(client, listed[0], str(exc), self.name))
                thread.pending[ns] = Pending()
            thread.suspicious = thread.suspicious or thread.pending[ns].may_hold_nul

    def _assemble(self, client: redis.Redis, threads: list[Thread], broken: list[Unreadable]) -> list[Conversation]:
        """Plan each thread's history, read the bodies it needs (round 4), and build it."""
        plans = []
        for thread in threads:
            scope = f"{self.name}:{thread.candidate.thread_id}"
            lives = {"": Live.of(thread.newest, thread.state.current(), thread.pending[""].messages, scope)}
            for ns, newest in _newest_by_ns(thread.snapshots).items():
                if ns:
                    refs: list[history.Item] = [Ref(newest, i, _id_of(k)) for i, k in enumerate(newest.keys)]
                    lives[ns] = Live.of(newest, refs, thread.pending.get(ns, Pending()).messages, scope)
            plans.append(history.plan([thread.newest, *thread.snapshots], lives))

        wanted = [history.refs_to_read(p) for p in plans]
        pipe = client.pipeline(transaction=False)
        asked: list[tuple[int, str, list[tuple[int, int]]]] = []
        for n, positions in enumerate(wanted):
            for key, indexes in positions.items():
                runs = _runs(sorted(set(indexes)))
                pipe.execute_command("JSON.GET", key, *(self._slice(a, b) for a, b in runs))
                asked.append((n, key, runs))
        bodies: list[dict[tuple[str, int], Message]] = [{} for _ in threads]
        failed: set[int] = set()
        for (n, key, runs), raw in zip(asked, pipe.execute(raise_on_error=False)):
            try:
                if raw is None or isinstance(raw, Exception):
                    raise MalformedCheckpoint(f"the checkpoint {key} expired or changed while it was read")
                paths = json_paths(raw, [self._slice(a, b) for a, b in runs]) or {}
                for a, b in runs:
                    items = paths.get(self._slice(a, b)) or []
                    if len(items) != b - a:
                        raise MalformedCheckpoint(f"the checkpoint {key} changed while it was read")
                    for offset, item in enumerate(items):
                        bodies[n][(key, a + offset)] = parse_message(item, a + offset)
                threads[n].suspicious = threads[n].suspicious or may_hold_nul(raw)
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, key, str(exc), self.name))
                failed.add(n)

        conversations = []
        for n, (thread, planned) in enumerate(zip(threads, plans)):
            if n in failed:
                continue
            try:
                entries = history.entries(planned, bodies[n])
                if thread.suspicious:
                    check_storable(thread.state, [e.message for e in entries])
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, thread.candidate.checkpoint_key, str(exc), self.name))
                continue
            conversations.append(
                Conversation(
                    candidate=thread.candidate,
                    source=self.name,
                    checkpoint_id=thread.checkpoint_id,
                    state=thread.state,
                    entries=entries,
                    guard=thread.guard,
                    scope=f"{self.name}:{thread.candidate.thread_id}",
                    held=thread.held,
                    read=frozenset(thread.read),
                    found=frozenset(thread.listed),
                )
            )
        return conversations

    def _slice(self, start: int, end: int) -> str:
        return f"{self.messages_path}[{start}:{end}]"

    # -- delete --------------------------------------------------------------------------

    def delete_many(self, client: redis.Redis, conversations: list[Conversation], check: Check | None = None) -> list[bool]:
        threads = [c.candidate.thread_id for c in conversations]
        documents = search_threads(client, self.index(client, self.checkpoint), threads)
        writes = search_threads(client, self.index(client, self.write), threads)
        chosen: list[tuple[int, list[str], Found, Found]] = []
        for n, (conversation, found, written) in enumerate(zip(conversations, documents, writes)):
            if (
                not listed(conversation, found, written)
                or _new_documents(conversation, found or [])
                or self.written_since_read(conversation, found or [], written or [])
            ):
                continue
            chosen.append((n, self.thread_keys(conversation, [k for k, _ in found or []], [k for k, _ in written or []]), found or [], written or []))
        if check is not None and chosen:
            held = self.held(client, [(conversations[n], found, written) for n, _, found, written in chosen])
            allowed = check([(conversations[n], h) for (n, _, _, _), h in zip(chosen, held)])
            chosen = [c for c, ok in zip(chosen, allowed) if ok]
        script = client.register_script(self.delete_script)
        pipe = client.pipeline(transaction=False)
        for n, keys, _, _ in chosen:
            script(keys=keys, args=conversations[n].guard.args(), client=pipe)
        results = dict(zip((n for n, _, _, _ in chosen), pipe.execute()))
        # 0: changed since it was read; -1: the thread expired on its own meanwhile
        return [results.get(n, 0) != 0 for n in range(len(conversations))]

    def held(self, client: redis.Redis, items: list[tuple[Conversation, Found, Found]]) -> list[Held]:
        """What the keys about to be deleted hold, apart from the history: every message of the
        newest root checkpoint (any channel), and the raw message ids of each document `load`
        read, as it read them (a checkpoint document never changes once written); for any
        other document, read now, the ids of every list of its state and its run's input
        (GUARD_IDS, GUARD_INPUT); and every message in the pending writes of each namespace's
        newest checkpoint, read now. HISTORY_CHUNK documents a pipeline."""
        asked: list[tuple[Held, str, bool]] = []  # (whose, key, a checkpoint document?)
        result = []
        for conversation, documents, writes in items:
            held = Held(set(conversation.held.ids), set(conversation.held.anonymous))
            result.append(held)
            newest: dict[str, str] = {}
            for _, f in documents:
                ns = root_ns(f.get("checkpoint_ns"))
                newest[ns] = max(newest.get(ns, ""), f.get("checkpoint_id", ""))
            # A checkpoint document never changes once written: one read while loading counts.
            asked += [(held, key, True) for key, _ in documents if key not in conversation.read]
            asked += [(held, k, False) for k, f in writes if f.get("checkpoint_id", "") == newest.get(root_ns(f.get("checkpoint_ns")))]
        for chunk in _chunks(asked, HISTORY_CHUNK):
            pipe = client.pipeline(transaction=False)
            for _, key, is_document in chunk:
                if is_document:
                    pipe.execute_command("JSON.GET", key, GUARD_IDS, GUARD_INPUT)
                else:
                    pipe.execute_command("JSON.GET", key)
            for (held, key, is_document), reply in zip(chunk, pipe.execute(raise_on_error=False)):
                if reply is None or isinstance(reply, Exception):
                    continue
                if is_document:
                    _hold(json_paths(reply) or {}, held)
                    continue
                try:
                    value, _ = decode_value(parse_json(reply, f"pending write {key}"), key)
                except MalformedCheckpoint:
                    continue  # not readable as data (pickle, bytes): no message the archive could hold
                held_in(value, held)
        return result


def _since(timed: list[tuple[Thread, Document, datetime]], since: datetime | None) -> list[tuple[Thread, Document, datetime]]:
    """The documents written from `since` on, and each subgraph namespace's newest (its pending
    writes may have come after the last read); all of them when `since` is None."""
    if since is None:
        return timed
    newest: dict[str, tuple[datetime, str]] = {}
    for _, document, time in timed:
        if document.ns and (time, document.checkpoint_id) > newest.get(document.ns, (time, "")):
            newest[document.ns] = (time, document.checkpoint_id)
    return [
        (thread, document, time) for thread, document, time in timed
        if time >= since or (document.ns and newest.get(document.ns) == (time, document.checkpoint_id))
    ]


def _hold(paths: dict[str, list[Any]], held: Held) -> None:
    """Count in what a document's GUARD_IDS and GUARD_INPUT paths hold."""
    held.ids.update(i for i in paths.get(GUARD_IDS) or [] if isinstance(i, str))
    held_in(paths.get(GUARD_INPUT), held)


def _new_documents(conversation: Conversation, documents: Found) -> bool:
    """Whether the bot wrote a checkpoint (any namespace) after `load` listed the thread's:
    then the thread is being written to, and stays for the next run."""
    return conversation.found is not None and any(key not in conversation.found for key, _ in documents)


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


def _members(reply: Any) -> list[Any]:
    return reply if isinstance(reply, list) else []


def _metadata(value: Any) -> dict[str, Any]:
    """A checkpoint's metadata: an object, or JSON text of one (the full savers)."""
    if isinstance(value, str):
        try:
            value = parse_json(value, "the metadata")
        except MalformedCheckpoint:
            return {}
    return value if isinstance(value, dict) else {}


def _newest_by_ns(snapshots: list[Snapshot]) -> dict[str, Snapshot]:
    newest: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        known = newest.get(snapshot.ns)
        if known is None or snapshot.checkpoint_id > known.checkpoint_id:
            newest[snapshot.ns] = snapshot
    return newest


def _id_of(key: str) -> str | None:
    return key[3:] if key.startswith("id:") else None


class _Keys(dict[str, str]):
    """Message id -> its identity ("id:" + id), one string per id however many documents hold it."""

    def __missing__(self, message_id: str) -> str:
        key = self[message_id] = "id:" + message_id
        return key

    def of(self, ids: list[Any]) -> tuple[str, ...] | None:
        """The identities of a document's message ids, as soon as a search page is parsed; None
        when one of them is not a non-empty string (the document is then read whole)."""
        if not all(type(i) is str and i for i in ids):
            return None
        return tuple(map(self.__getitem__, ids))


def _mget(reply: Any, n: int) -> list[Any] | None:
    """The matches of a JSON.MGET's path in its `n`-th key; None for a key that is gone (and
    for every key if the command failed)."""
    if not isinstance(reply, list) or reply[n] is None:
        return None
    matches = orjson.loads(reply[n])
    return matches if isinstance(matches, list) else None


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _only(matches: list[Any] | None) -> str:
    """The one match of a path that names a string field, as text ("" when there is none)."""
    return matches[0] if matches and isinstance(matches[0], str) else ""


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted positions as half-open runs [a, b)."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
