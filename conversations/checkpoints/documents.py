"""Rounds 2 and 3 of reading the savers' due threads (indexed.py): every checkpoint document
of a thread besides the newest root one, as a snapshot of its message ids (history.py), and
the pending writes of each subgraph namespace's newest checkpoint.

A document's time and ids come from RedisJSON paths, server-side: a thread of k checkpoints
costs k lists of ids, not k lists of messages. Only the rare document whose ids do not line
up with its messages (a message without an id) is read whole.

Safety design: a document or write that cannot be read is quarantined and left out of the
history; the delete guard then finds its messages unarchived and keeps the thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis

from conversations.checkpoints.base import Unreadable, broken_with_value
from conversations.checkpoints.held import held_in
from conversations.checkpoints.history import Snapshot
from conversations.checkpoints.jsontext import may_hold_nul, parse_json
from conversations.checkpoints.messages import REMOVE, parse_message, parse_time
from conversations.checkpoints.redisjson import chunks, escape_tag, mget_matches, search_many
from conversations.checkpoints.state import message_keys
from conversations.checkpoints.threads import Document, Thread, newest_by_ns, root_ns
from conversations.checkpoints.writes import Pending, read_pending
from conversations.exceptions import MalformedCheckpoint

# Documents asked about in one pipeline while a batch's histories are read (bounds memory).
HISTORY_CHUNK = 500
# Documents one JSON.MGET asks for their message ids: no command long, even for documents of
# hundreds of messages.
MGET_CHUNK = 20
WRITE_FIELDS = ("thread_id", "checkpoint_ns", "checkpoint_id", "channel")

Dated = tuple[Thread, Document, datetime]


def read_history(client: redis.Redis, threads: list[Thread], broken: list[Unreadable], name: str, messages_path: str) -> None:
    """A snapshot of every document of the thread from what the search returned of it (its
    time and message ids), and for the rare one whose messages are not all LangChain
    envelopes with ids, from its messages read whole, HISTORY_CHUNK documents a pipeline.
    Equal ids share one string, so memory follows the distinct messages."""
    dated: list[Dated] = []
    for thread in threads:
        timed = []
        for document in thread.documents:
            try:
                if not document.found.get("ts"):
                    raise MalformedCheckpoint("the checkpoint has no time (checkpoint.ts)")
                timed.append((thread, document, parse_time(document.found["ts"][0])))
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, document.key, str(exc), name))
        dated += _since(timed, thread.candidate.read_since)
    whole = _read_ids(client, dated, messages_path)
    _read_whole(client, whole, broken, name, messages_path)


def _since(timed: list[Dated], since: datetime | None) -> list[Dated]:
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


def _read_ids(client: redis.Redis, dated: list[Dated], messages_path: str) -> list[Dated]:
    """A snapshot of each document from its message ids, MGET_CHUNK documents a JSON.MGET, with
    each one's number of messages; the documents to read whole instead."""
    as_key = _Keys()
    whole: list[Dated] = []
    ids_path = f"{messages_path}[*].kwargs.id"
    for chunk in chunks(dated, HISTORY_CHUNK):
        pipe = client.pipeline(transaction=False)
        parts = chunks(chunk, MGET_CHUNK)
        for part in parts:
            pipe.execute_command("JSON.MGET", *(document.key for _, document, _ in part), ids_path)
            for _, document, _ in part:
                pipe.execute_command("JSON.ARRLEN", document.key, messages_path)
        replies = iter(pipe.execute(raise_on_error=False))
        for part in parts:
            id_lists = next(replies)
            lengths = [next(replies) for _ in part]
            for n, (thread, document, time) in enumerate(part):
                ids, length = mget_matches(id_lists, n), lengths[n]
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
    return whole


def _read_whole(client: redis.Redis, whole: list[Dated], broken: list[Unreadable], name: str, messages_path: str) -> None:
    """A snapshot of each document from its messages read whole, HISTORY_CHUNK a pipeline."""
    for chunk in chunks(whole, HISTORY_CHUNK):
        pipe = client.pipeline(transaction=False)
        for _, document, _ in chunk:
            pipe.execute_command("JSON.GET", document.key, messages_path)
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
                broken.append(broken_with_value(client, document.key, str(exc), name))
                continue
            keys = tuple(message_keys(messages, thread.scope))
            thread.snapshots.append(Snapshot(document.key, document.ns, document.checkpoint_id, time, keys))
            thread.suspicious = thread.suspicious or may_hold_nul(raw)
            held_in(items, thread.held)
            thread.read.add(document.key)


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


def read_subgraph_writes(
    client: redis.Redis, threads: list[Thread], broken: list[Unreadable], name: str, index: str, messages_field: str
) -> None:
    """The pending writes of each subgraph namespace's newest checkpoint, found through the
    write index (an interrupted subgraph's finished task keeps its messages there)."""
    asked: list[tuple[Thread, str, str]] = []
    for thread in threads:
        for ns, newest in newest_by_ns(thread.snapshots).items():
            if ns:
                asked.append((thread, ns, newest.checkpoint_id))
    if not asked:
        return
    queries = ["@thread_id:{%s} @checkpoint_id:{%s}" % (escape_tag(t.candidate.thread_id), escape_tag(cid)) for t, _, cid in asked]
    found = search_many(client, index, queries, WRITE_FIELDS)
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
            thread.pending[ns] = read_pending(writes, messages_field, set())
        except (MalformedCheckpoint, ValueError) as exc:  # quarantined; the delete guard judges the rest
            broken.append(broken_with_value(client, listed[0], str(exc), name))
            thread.pending[ns] = Pending()
        thread.suspicious = thread.suspicious or thread.pending[ns].may_hold_nul
