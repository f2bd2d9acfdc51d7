"""Deleting a thread of the langgraph-checkpoint-redis savers (indexed.py's `delete_many`):
the compare-and-delete scripts, and what the delete guard is shown of the keys about to go.

Safety design: a thread's keys go in one script that first compares what was archived with
what is there now (the newest checkpoint and its registered pending writes) and removes
nothing if the bot wrote since. Before that, every key the script may remove is read again
for the guard, which lets it go only if every message the keys hold is committed.
"""

from __future__ import annotations

from typing import Any

import redis

from conversations.checkpoints.base import Conversation, Held
from conversations.checkpoints.documents import HISTORY_CHUNK
from conversations.checkpoints.held import held_in
from conversations.checkpoints.jsontext import parse_json
from conversations.checkpoints.redisjson import Found, chunks, json_paths
from conversations.checkpoints.threads import root_ns
from conversations.checkpoints.writes import decode_value
from conversations.exceptions import MalformedCheckpoint

# How many keys one UNLINK gets inside the delete scripts (Lua's unpack has a limit).
UNLINK_CHUNK = 500
# What the delete guard reads of a checkpoint document `load` did not read: the id of every
# message in any of the state's lists, not only the messages channel (a recursive `..` path
# would cost the server as much as the whole document), and a run's input.
GUARD_IDS = "$.checkpoint.channel_values.*[*].kwargs.id"
GUARD_INPUT = "$.checkpoint.channel_values.__start__"  # a run's input, messages without ids
# The end of every delete script: the keys unlinked, UNLINK_CHUNK a command.
_UNLINK_ALL = """for i = 1, #KEYS, %d do
    redis.call('UNLINK', unpack(KEYS, i, math.min(i + %d - 1, #KEYS)))
end
return 1
""" % (UNLINK_CHUNK, UNLINK_CHUNK)


def delete_script(compare: str) -> str:
    """A layout's compare-and-delete script: its `compare` (Lua that returns -1 when the thread
    is gone and 0 when it changed), then every key unlinked, UNLINK_CHUNK a command, and 1."""
    return compare + _UNLINK_ALL


def new_documents(conversation: Conversation, documents: Found) -> bool:
    """Whether the bot wrote a checkpoint (any namespace) after `load` listed the thread's:
    then the thread is being written to, and stays for the next run."""
    return conversation.found is not None and any(key not in conversation.found for key, _ in documents)


def held_by_keys(client: redis.Redis, items: list[tuple[Conversation, Found, Found]]) -> list[Held]:
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
    for chunk in chunks(asked, HISTORY_CHUNK):
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


def _hold(paths: dict[str, list[Any]], held: Held) -> None:
    """Count in what a document's GUARD_IDS and GUARD_INPUT paths hold."""
    held.ids.update(i for i in paths.get(GUARD_IDS) or [] if isinstance(i, str))
    held_in(paths.get(GUARD_INPUT), held)
