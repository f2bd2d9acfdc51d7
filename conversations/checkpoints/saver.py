"""langgraph-checkpoint-redis's RedisSaver / AsyncRedisSaver layout.

    checkpoint_latest:{thread}:{ns}              string: the key of the newest checkpoint
    checkpoint:{thread}:{ns}:{checkpoint_id}     JSON: one checkpoint, the whole message list inline
    checkpoint_write:{thread}:{ns}:{cid}:{task}:{idx}   JSON: one pending write
    write_keys_zset:{thread}:{ns}:{cid}          zset: that checkpoint's write keys

The root namespace is spelled `__empty__`. Thread ids may hold ':', so keys are never split
on it: the thread is what lies between a known prefix and a known suffix. Only the root
namespace is read; subgraph namespaces hold copies of the same messages.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from conversations import conf
from conversations.checkpoints.base import (
    EMPTY_NS,
    UNLINK_CHUNK,
    Broken,
    Candidate,
    Conversation,
    Layout,
    apply_pending,
    broken_with_value,
    decode,
    entry_times,
    escape_tag,
    first,
    json_paths,
    pending_messages,
    search_keys,
    ttl_seconds,
)
from conversations.checkpoints.messages import parse_json, parse_state, parse_time
from conversations.exceptions import MalformedCheckpoint

# Deletes the thread's keys only if its newest checkpoint and that checkpoint's pending
# writes are what we archived. KEYS[1] pointer, KEYS[2] write zset, then everything else.
DELETE_IF_UNCHANGED = """
local pointer = redis.call('GET', KEYS[1])
if not pointer then return -1 end
if pointer ~= ARGV[1] then return 0 end
if redis.call('ZCARD', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
for i = 1, #KEYS, %d do
    redis.call('UNLINK', unpack(KEYS, i, math.min(i + %d - 1, #KEYS)))
end
return 1
""" % (UNLINK_CHUNK, UNLINK_CHUNK)

# A safety stop for the walk back along parent checkpoints.
MAX_CHAIN = 100_000


class SaverLayout(Layout):
    name = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint = conf.get("CHECKPOINT_PREFIX")
        self.latest = conf.get("CHECKPOINT_LATEST_PREFIX")
        self.write = conf.get("CHECKPOINT_WRITE_PREFIX")
        self.zset = conf.get("WRITE_KEYS_ZSET_PREFIX")
        self.messages_path = f"$.checkpoint.channel_values.{self.fields['messages']}"

    def scan_pattern(self) -> str:
        return f"{self.latest}:*:{EMPTY_NS}"

    def thread_of(self, pointer_key: str) -> str:
        return pointer_key[len(self.latest) + 1 : -len(EMPTY_NS) - 1]

    def checkpoint_key(self, thread: str, checkpoint_id: str) -> str:
        return f"{self.checkpoint}:{thread}:{EMPTY_NS}:{checkpoint_id}"

    def zset_key(self, thread: str, checkpoint_id: str, ns: str = EMPTY_NS) -> str:
        return f"{self.zset}:{thread}:{ns}:{checkpoint_id}"

    # -- probe -------------------------------------------------------------------------

    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Broken]]:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute(raise_on_error=False)

        pointed: list[tuple[str, str, str, Any]] = []
        broken: list[Broken] = []
        for i, key in enumerate(keys):
            value, pttl = replies[2 * i], replies[2 * i + 1]
            if value is None:
                continue  # removed since the scan saw it
            thread = self.thread_of(key)
            target = decode(value) if not isinstance(value, Exception) else None
            if target is None or not target.startswith(f"{self.checkpoint}:{thread}:{EMPTY_NS}:"):
                broken.append(broken_with_value(client, key, "the checkpoint_latest pointer does not name a checkpoint of its thread"))
                continue
            pointed.append((key, thread, target, pttl))

        pipe = client.pipeline(transaction=False)
        for _, _, target, _ in pointed:
            pipe.execute_command("JSON.GET", target, "$.checkpoint.ts", "$.checkpoint_ts")
        replies = pipe.execute(raise_on_error=False)

        candidates = []
        for (key, thread, target, pttl), reply in zip(pointed, replies):
            try:
                paths = json_paths(reply)
                if paths is None:
                    if isinstance(reply, Exception):
                        raise MalformedCheckpoint(f"the newest checkpoint is not a JSON document ({reply})")
                    broken.append(Broken(key=key, error=f"points to {target}, which no longer exists", counted=False))
                    continue
                stamp = first(paths, "$.checkpoint.ts", "$.checkpoint_ts")
                if stamp is None:
                    raise MalformedCheckpoint("the newest checkpoint has no time (checkpoint.ts)")
                checkpoint_time = parse_time(stamp)
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, target, str(exc)))
                continue
            candidates.append(
                Candidate(
                    key=key,
                    thread_id=thread,
                    checkpoint_ns="",
                    checkpoint_key=target,
                    checkpoint_time=checkpoint_time,
                    ttl_seconds=ttl_seconds(pttl),
                )
            )
        return candidates, broken

    # -- load --------------------------------------------------------------------------

    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Broken]]:
        pipe = client.pipeline(transaction=False)
        for candidate in due:
            pipe.execute_command("JSON.GET", candidate.checkpoint_key)
            checkpoint_id = candidate.checkpoint_key.rsplit(":", 1)[1]
            pipe.zrange(self.zset_key(candidate.thread_id, checkpoint_id), 0, -1)
        replies = pipe.execute(raise_on_error=False)

        read: list[tuple[Candidate, dict[str, Any], list[str]]] = []
        broken: list[Broken] = []
        for i, candidate in enumerate(due):
            raw, write_keys = replies[2 * i], replies[2 * i + 1]
            if raw is None:
                continue  # replaced or removed since the probe; the next run sees the new one
            try:
                if isinstance(raw, Exception):
                    raise MalformedCheckpoint(f"the checkpoint is not a JSON document ({raw})")
                doc = parse_json(raw, "the checkpoint")
                if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), dict):
                    raise MalformedCheckpoint("the document has no 'checkpoint' object")
            except MalformedCheckpoint as exc:
                broken.append(broken_with_value(client, candidate.checkpoint_key, str(exc)))
                continue
            if isinstance(write_keys, Exception):
                write_keys = []
            read.append((candidate, doc, [decode(k) or "" for k in write_keys]))

        pipe = client.pipeline(transaction=False)
        for _, _, write_keys in read:
            for key in write_keys:
                pipe.execute_command("JSON.GET", key)
        write_replies = iter(pipe.execute(raise_on_error=False))

        conversations = []
        for candidate, doc, write_keys in read:
            writes = [(key, next(write_replies)) for key in write_keys]
            try:
                conversations.append(self._conversation(candidate, doc, writes))
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, candidate.checkpoint_key, str(exc)))
        self._stamp(client, conversations)
        return conversations, broken

    def _conversation(self, candidate: Candidate, doc: dict[str, Any], writes: list[tuple[str, Any]]) -> Conversation:
        checkpoint = doc["checkpoint"]
        state = parse_state(checkpoint.get("channel_values"), self.fields)
        messages, state_fields = pending_messages(
            [(k, None if isinstance(v, Exception) else v) for k, v in writes], self.fields
        )
        apply_pending(state, messages, state_fields, self.fields)
        checkpoint_id = str(doc.get("checkpoint_id") or checkpoint.get("id") or "")
        if not checkpoint_id:
            raise MalformedCheckpoint("the checkpoint has no checkpoint_id")
        return Conversation(
            candidate=candidate,
            source=self.name,
            checkpoint_id=checkpoint_id,
            state=state,
            timestamps=[],
            guard=[candidate.checkpoint_key, str(len(writes))],
            scope=f"{self.name}:{candidate.thread_id}",
        )

    def _stamp(self, client: redis.Redis, conversations: list[Conversation]) -> None:
        """Give every message its entry time by walking each thread's parent checkpoints,
        one pipeline per step back for the whole batch."""
        chains: dict[int, list[tuple[Any, int, str | None]]] = {i: [] for i in range(len(conversations))}
        cursors = {i: c.candidate.checkpoint_key for i, c in enumerate(conversations)}
        for _ in range(MAX_CHAIN):
            if not cursors:
                break
            pipe = client.pipeline(transaction=False)
            for key in cursors.values():
                pipe.execute_command(
                    "JSON.GET", key, "$.parent_checkpoint_id", "$.checkpoint.ts", f"{self.messages_path}[-1].kwargs.id"
                )
                pipe.execute_command("JSON.ARRLEN", key, self.messages_path)
            replies = pipe.execute(raise_on_error=False)
            next_cursors = {}
            for n, (i, key) in enumerate(cursors.items()):
                try:
                    paths = json_paths(replies[2 * n])
                except ValueError:
                    paths = None
                lengths = replies[2 * n + 1]
                stamp = first(paths, "$.checkpoint.ts")
                if paths is None or stamp is None or not isinstance(lengths, list) or not lengths:
                    continue  # expired, or not a checkpoint we can read: the walk ends here
                try:
                    chains[i].append((parse_time(stamp), int(lengths[0] or 0), first(paths, f"{self.messages_path}[-1].kwargs.id")))
                except (ValueError, TypeError):
                    continue
                parent = first(paths, "$.parent_checkpoint_id")
                if isinstance(parent, str) and parent:
                    next_cursors[i] = self.checkpoint_key(conversations[i].candidate.thread_id, parent)
            cursors = next_cursors
        for i, conversation in enumerate(conversations):
            newest = conversation.candidate.checkpoint_time
            assert newest is not None
            conversation.timestamps = entry_times(conversation.messages, newest, chains[i])

    # -- delete ------------------------------------------------------------------------

    def thread_keys(self, client: redis.Redis, conversation: Conversation) -> list[str]:
        """All of a thread's keys, every kind and namespace, found through the saver's own
        search indexes (as its delete_thread does) plus the pointers and registries they imply."""
        thread = conversation.candidate.thread_id
        query = "@thread_id:{%s}" % escape_tag(thread)
        checkpoints = search_keys(client, self.checkpoint, query)
        writes = search_keys(client, self.write, query)
        keys = {conversation.candidate.checkpoint_key, *checkpoints, *writes}
        prefix = f"{self.checkpoint}:{thread}:"
        for key in checkpoints:
            if key.startswith(prefix) and ":" in key[len(prefix):]:
                ns, checkpoint_id = key[len(prefix):].rsplit(":", 1)
                keys.add(f"{self.latest}:{thread}:{ns}")
                keys.add(self.zset_key(thread, checkpoint_id, ns))
        return sorted(keys)

    def delete(self, client: redis.Redis, conversation: Conversation) -> bool:
        pointer = conversation.candidate.key
        zset = self.zset_key(conversation.candidate.thread_id, conversation.checkpoint_id)
        others = [k for k in self.thread_keys(client, conversation) if k not in (pointer, zset)]
        result = client.eval(DELETE_IF_UNCHANGED, 2 + len(others), pointer, zset, *others, *conversation.guard)
        return result != 0  # -1: the thread expired on its own after we read it
