"""langgraph-checkpoint-redis's RedisSaver / AsyncRedisSaver layout.

    checkpoint_latest:{thread}:{ns}              string: the key of the newest checkpoint
    checkpoint:{thread}:{ns}:{checkpoint_id}     JSON: one checkpoint, the whole message list inline
    checkpoint_write:{thread}:{ns}:{cid}:{task}:{idx}   JSON: one pending write
    write_keys_zset:{thread}:{ns}:{cid}          zset: that checkpoint's write keys

The root namespace is spelled `__empty__`. Thread ids may hold ':', so keys are never split
on it: the thread is what lies between a known prefix and a known suffix. Threads are found
through their root `checkpoint_latest` pointers; every checkpoint of every namespace is then
read as history (indexed.py). The same key patterns hold from 0.1.x to 0.5.x; the search
indexes are named `checkpoints`/`checkpoint_writes` before 0.3.0 (indexed.py finds either).
"""

from __future__ import annotations

from typing import Any

import redis

from conversations.checkpoints.base import Candidate, Conversation, Guard, Unreadable, broken_with_value
from conversations.checkpoints.deleting import delete_script
from conversations.checkpoints.indexed import TIME_PATHS, IndexedLayout, checkpoint_time
from conversations.checkpoints.redisjson import Found, decode, json_paths, read_with_pttl
from conversations.checkpoints.threads import EMPTY_NS, root_ns
from conversations.exceptions import MalformedCheckpoint

# Deletes the thread's keys only if its newest checkpoint and that checkpoint's pending
# writes are what we archived. KEYS[1] pointer, KEYS[2] write zset, then everything else.
DELETE_IF_UNCHANGED = delete_script("""
local pointer = redis.call('GET', KEYS[1])
if not pointer then return -1 end
if pointer ~= ARGV[1] then return 0 end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
""")


class SaverLayout(IndexedLayout):
    name = "redis"
    delete_script = DELETE_IF_UNCHANGED

    def scan_pattern(self) -> str:
        return f"{self.latest}:*:{EMPTY_NS}"

    def thread_of(self, pointer_key: str) -> str:
        return pointer_key[len(self.latest) + 1 : -len(EMPTY_NS) - 1]

    def zset_key(self, thread: str, checkpoint_id: str, ns: str = EMPTY_NS) -> str:
        return f"{self.zset}:{thread}:{ns}:{checkpoint_id}"

    # -- probe -------------------------------------------------------------------------

    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Unreadable]]:
        pointed: list[tuple[str, str, str, Any]] = []
        broken: list[Unreadable] = []
        for key, value, pttl in read_with_pttl(client, keys, "GET"):
            if value is None:
                continue  # removed since the scan saw it
            thread = self.thread_of(key)
            target = decode(value) if not isinstance(value, Exception) else None
            if target is None or not target.startswith(f"{self.checkpoint}:{thread}:{EMPTY_NS}:"):
                broken.append(broken_with_value(client, key, "the checkpoint_latest pointer does not name a checkpoint of its thread", self.name))
                continue
            pointed.append((key, thread, target, pttl))

        pipe = client.pipeline(transaction=False)
        for _, thread, target, _ in pointed:
            pipe.execute_command("JSON.GET", target, *TIME_PATHS)
            pipe.zcard(self.zset_key(thread, target.rpartition(":")[2]))
        replies = pipe.execute(raise_on_error=False)

        candidates = []
        for (key, thread, target, pttl), reply, writes in zip(pointed, replies[::2], replies[1::2]):
            try:
                paths = json_paths(reply)
                if paths is None:
                    if isinstance(reply, Exception):
                        raise MalformedCheckpoint(f"the newest checkpoint is not a JSON document ({reply})")
                    broken.append(Unreadable(key=key, error=f"points to {target}, which no longer exists", source=self.name, quarantine=False))
                    continue
                newest_time = checkpoint_time(paths, "the newest checkpoint")
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, target, str(exc), self.name))
                continue
            # Its version: the newest checkpoint, and how many pending writes it has.
            candidates.append(self.root_candidate(key, thread, target, newest_time, pttl, version=f"{target}|{writes}"))
        return candidates, broken

    # -- load (indexed.py) -------------------------------------------------------------

    def root_registries(self, candidate: Candidate, checkpoint_id: str) -> list[str]:
        return [self.zset_key(candidate.thread_id, checkpoint_id)]

    def is_document(self, thread: str, key: str, fields: dict[str, str]) -> bool:
        return key == f"{self.checkpoint}:{thread}:{fields.get('checkpoint_ns')}:{fields.get('checkpoint_id')}"

    def make_guard(self, candidate: Candidate, checkpoint_id: str, registered: int, current: int) -> Guard:
        return Guard(candidate.checkpoint_key, registered, current)

    # -- delete ------------------------------------------------------------------------

    def thread_keys(self, conversation: Conversation, checkpoints: list[str], writes: list[str]) -> list[str]:
        """All of a thread's keys, every kind and namespace: what the saver's own search indexes
        found (as its delete_thread does), plus the pointers and registries they imply. The
        pointer and the newest checkpoint's write registry come first, for the script."""
        thread = conversation.candidate.thread_id
        first = [conversation.candidate.key, self.zset_key(thread, conversation.checkpoint_id)]
        keys = {conversation.candidate.checkpoint_key, *checkpoints, *writes}
        prefix = f"{self.checkpoint}:{thread}:"
        for key in checkpoints:
            if key.startswith(prefix) and ":" in key[len(prefix):]:
                ns, checkpoint_id = key[len(prefix):].rsplit(":", 1)
                keys.add(f"{self.latest}:{thread}:{ns}")
                keys.add(self.zset_key(thread, checkpoint_id, ns))
        return first + sorted(keys - set(first))

    def written_since_read(self, conversation: Conversation, checkpoints: Found, writes: Found) -> bool:
        """Whether the search found what the script's guard cannot see yet. RedisSaver.put stores a
        new checkpoint (searchable at once) before it moves the latest pointer, and put_writes
        stores a write before it registers it: deleting those would lose what only they hold.
        Checkpoint ids sort by time (uuid6), as LangGraph itself relies on."""
        archived = conversation.checkpoint_id
        if any(root_ns(f.get("checkpoint_ns")) == "" and f.get("checkpoint_id", "") > archived for _, f in checkpoints):
            return True
        ids = [f.get("checkpoint_id", "") for _, f in writes if root_ns(f.get("checkpoint_ns")) == ""]
        return any(cid > archived for cid in ids) or ids.count(archived) > conversation.guard.current
