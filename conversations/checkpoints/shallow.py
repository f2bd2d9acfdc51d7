"""langgraph-checkpoint-redis's ShallowRedisSaver / AsyncShallowRedisSaver layout.

    checkpoint:{thread}:{raw ns}                    JSON: the one current checkpoint (root: trailing ':')
    write_registry:{thread}:{ns}:shallow            zset: pending write keys (sync saver)
    write_keys_zset:{thread}:{ns}:shallow           zset: pending write keys (async saver)
    current_checkpoint:{thread}:{ns}:shallow        the saver's tracker
    checkpoint_write:{thread}:{ns}:{cid}:{task}:{idx}  JSON: one pending write

Each prefix is a setting (the shallow savers' own two: WRITE_REGISTRY_PREFIX and
CURRENT_CHECKPOINT_PREFIX), read when the layout is made. Root documents are the keys that end
with ':' (an empty raw namespace); the full saver's checkpoint keys always end with a
checkpoint id, so the two never match the same pattern. The registries' namespace is
`__empty__` for the root from 0.3.6 on, and empty before (`write_registry:{thread}::shallow`):
both are read. Since 0.3.6 a registry also keeps the writes of earlier checkpoints, so only
those of the current checkpoint are read. A shallow saver keeps one checkpoint per namespace:
an interrupted subgraph's document is the only history there is.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from conversations.checkpoints.base import Candidate, Conversation, Guard, Unreadable, broken_with_value
from conversations.checkpoints.deleting import delete_script
from conversations.checkpoints.indexed import TIME_PATHS, IndexedLayout, checkpoint_time
from conversations.checkpoints.redisjson import Found, first, json_paths, read_with_pttl
from conversations.checkpoints.threads import EMPTY_NS, root_ns
from conversations.exceptions import MalformedCheckpoint

# KEYS[1] the document, KEYS[2..5] the four root registries, then everything else.
DELETE_IF_UNCHANGED = delete_script("""
local current = redis.call('JSON.GET', KEYS[1], '$.checkpoint.id')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
local registered = 0
for i = 2, 5 do registered = registered + redis.call('ZCARD', KEYS[i]) end
if registered ~= tonumber(ARGV[2]) then return 0 end
""")


class ShallowLayout(IndexedLayout):
    name = "shallow"
    delete_script = DELETE_IF_UNCHANGED

    def scan_pattern(self) -> str:
        return f"{self.checkpoint}:*:"

    def registries(self, thread: str, ns: str = EMPTY_NS) -> list[str]:
        names = [f"{self.registry}:{thread}:{ns}:shallow", f"{self.zset}:{thread}:{ns}:shallow"]
        if ns == EMPTY_NS:  # before 0.3.6 the root's namespace segment was empty
            names += [f"{self.registry}:{thread}::shallow", f"{self.zset}:{thread}::shallow"]
        return names

    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Unreadable]]:
        candidates, broken = [], []
        for key, reply, pttl in read_with_pttl(client, keys, "JSON.GET", *TIME_PATHS, "$.checkpoint.id"):
            try:
                if isinstance(reply, Exception):
                    raise MalformedCheckpoint(f"not a JSON document ({reply})")
                paths = json_paths(reply)
                if paths is None:
                    continue  # removed since the scan saw it
                written_at = checkpoint_time(paths, "the checkpoint")
                checkpoint_id = first(paths, "$.checkpoint.id")
                if not isinstance(checkpoint_id, str) or not checkpoint_id:
                    raise MalformedCheckpoint("the checkpoint has no id")
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, key, str(exc), self.name))
                continue
            thread = key[len(self.checkpoint) + 1 : -1]
            candidates.append(self.root_candidate(key, thread, key, written_at, pttl, version=checkpoint_id, value=checkpoint_id))
        return candidates, broken

    # -- load (indexed.py) -------------------------------------------------------------

    def newest_id(self, candidate: Candidate) -> str:
        return str(candidate.value)  # the probe read it

    def root_registries(self, candidate: Candidate, checkpoint_id: str) -> list[str]:
        return self.registries(candidate.thread_id)

    def root_writes(self, writes: list[tuple[str, Any]], checkpoint_id: str) -> list[tuple[str, Any]]:
        """The registries may still list writes of earlier checkpoints: keep this one's."""
        return [(k, v) for k, v in writes if _write_of(v, checkpoint_id)]

    def is_document(self, thread: str, key: str, fields: dict[str, str]) -> bool:
        return key == f"{self.checkpoint}:{thread}:{root_ns(fields.get('checkpoint_ns'))}"

    def make_guard(self, candidate: Candidate, checkpoint_id: str, registered: int, current: int) -> Guard:
        return Guard(json.dumps([checkpoint_id], separators=(",", ":")), registered, current)

    # -- delete --------------------------------------------------------------------------

    def thread_keys(self, conversation: Conversation, documents: list[str], writes: list[str]) -> list[str]:
        """The thread's keys, the document and its four root registries first, for the script."""
        thread = conversation.candidate.thread_id
        first = [conversation.candidate.key, *self.registries(thread)]
        keys = set(documents) | set(writes)
        prefix = f"{self.checkpoint}:{thread}:"
        for key in documents:
            if key.startswith(prefix):
                ns = key[len(prefix):] or EMPTY_NS
                keys.update(self.registries(thread, ns))
                keys.add(f"{self.tracker}:{thread}:{ns}:shallow")
        return first + sorted(keys - set(first))

    def written_since_read(self, conversation: Conversation, documents: Found, writes: Found) -> bool:
        """A pending write stored but not yet registered (the saver registers it afterwards) is
        invisible to the script's guard: seeing more writes of the current checkpoint than were
        read means the bot is writing, so the conversation stays for the next run. (Writes of
        earlier checkpoints that an old saver left unregistered do not count.)"""
        current = conversation.checkpoint_id
        found = sum(1 for _, f in writes if root_ns(f.get("checkpoint_ns")) == "" and f.get("checkpoint_id") == current)
        return found > conversation.guard.current


def _write_of(raw: Any, checkpoint_id: str) -> bool:
    """Whether a pending-write document belongs to the given checkpoint (unreadable ones are kept,
    so that their problem is reported rather than skipped)."""
    if raw is None or isinstance(raw, Exception):
        return False
    try:
        doc = json.loads(raw)
    except ValueError:
        return True
    return not isinstance(doc, dict) or doc.get("checkpoint_id") in (None, checkpoint_id)
