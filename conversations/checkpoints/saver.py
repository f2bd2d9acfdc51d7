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

from typing import Any

import redis

from conversations import conf
from conversations.checkpoints.base import (
    EMPTY_NS,
    UNLINK_CHUNK,
    Broken,
    Candidate,
    Conversation,
    IndexedLayout,
    apply_pending,
    broken_with_value,
    decode,
    entry_times,
    first,
    json_paths,
    pending_messages,
    escape_tag,
    Found,
    search_many,
    ttl_seconds,
)
from conversations.checkpoints.messages import may_hold_nul, parse_json, parse_state, parse_time
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


class SaverLayout(IndexedLayout):
    name = "redis"
    delete_script = DELETE_IF_UNCHANGED

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

        read: list[tuple[Candidate, dict[str, Any], list[str], bool]] = []
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
            read.append((candidate, doc, [decode(k) or "" for k in write_keys], may_hold_nul(raw)))

        pipe = client.pipeline(transaction=False)
        for _, _, write_keys, _ in read:
            for key in write_keys:
                pipe.execute_command("JSON.GET", key)
        write_replies = iter(pipe.execute(raise_on_error=False))

        conversations = []
        for candidate, doc, write_keys, suspicious in read:
            writes = [(key, next(write_replies)) for key in write_keys]
            try:
                conversations.append(self._conversation(candidate, doc, writes, suspicious))
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, candidate.checkpoint_key, str(exc)))
        self._stamp(client, conversations)
        return conversations, broken

    def _conversation(
        self, candidate: Candidate, doc: dict[str, Any], writes: list[tuple[str, Any]], suspicious: bool
    ) -> Conversation:
        checkpoint = doc["checkpoint"]
        state = parse_state(checkpoint.get("channel_values"), self.fields)
        messages, state_fields, nul_in_writes = pending_messages(
            [(k, None if isinstance(v, Exception) else v) for k, v in writes], self.fields
        )
        apply_pending(state, messages, state_fields, self.fields, check=suspicious or nul_in_writes)
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
        """Give every message its entry time. The saver's search index lists each thread's root
        checkpoints with their parents; the chain back from the newest is built from that, and
        what each checkpoint held (message count, last message id) is read in one pipeline.
        Two round trips per batch, however long the threads."""
        queries = ["@thread_id:{%s} @checkpoint_ns:{%s}" % (escape_tag(c.candidate.thread_id), EMPTY_NS) for c in conversations]
        found = search_many(client, self.checkpoint, queries, ("checkpoint_id", "parent_checkpoint_id"))
        chains: list[list[str]] = []
        for conversation, documents in zip(conversations, found):
            documents = documents or []  # None: the index cannot be asked about this thread id
            parents = {f.get("checkpoint_id", ""): f.get("parent_checkpoint_id", "") for _, f in documents}
            chain, cursor = [], conversation.checkpoint_id
            while cursor and cursor in parents and len(chain) <= len(parents):
                chain.append(self.checkpoint_key(conversation.candidate.thread_id, cursor))
                cursor = parents[cursor]
            chains.append(chain or [conversation.candidate.checkpoint_key])

        pipe = client.pipeline(transaction=False)
        for chain in chains:
            for key in chain:
                pipe.execute_command("JSON.GET", key, "$.checkpoint.ts", f"{self.messages_path}[-1].kwargs.id")
                pipe.execute_command("JSON.ARRLEN", key, self.messages_path)
        replies = iter(pipe.execute(raise_on_error=False))
        for conversation, chain in zip(conversations, chains):
            held: list[tuple[Any, int, str | None]] = []
            walking = True
            for _ in chain:
                paths, lengths = next(replies), next(replies)
                if not walking:
                    continue
                try:
                    values = json_paths(paths)
                    stamp = first(values, "$.checkpoint.ts")
                    if stamp is None or not isinstance(lengths, list) or not lengths:
                        raise ValueError("expired or unreadable")
                    held.append((parse_time(stamp), int(lengths[0] or 0), first(values, f"{self.messages_path}[-1].kwargs.id")))
                except (ValueError, TypeError):
                    walking = False  # the chain ends where a checkpoint is gone or unreadable
            newest = conversation.candidate.checkpoint_time
            assert newest is not None
            conversation.timestamps = entry_times(conversation.messages, newest, held)

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
        if any(f.get("checkpoint_ns") == EMPTY_NS and f.get("checkpoint_id", "") > archived for _, f in checkpoints):
            return True
        ids = [f.get("checkpoint_id", "") for _, f in writes if f.get("checkpoint_ns") == EMPTY_NS]
        return any(cid > archived for cid in ids) or ids.count(archived) > int(conversation.guard[1])
