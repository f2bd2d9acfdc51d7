"""langgraph-checkpoint-redis's ShallowRedisSaver / AsyncShallowRedisSaver layout.

    checkpoint:{thread}:{raw ns}                    JSON: the one current checkpoint (root: trailing ':')
    write_registry:{thread}:{ns}:shallow            zset: pending write keys (sync saver)
    write_keys_zset:{thread}:{ns}:shallow           zset: pending write keys (async saver)
    current_checkpoint:{thread}:{ns}:shallow        the saver's tracker
    checkpoint_write:{thread}:{ns}:{cid}:{task}:{idx}  JSON: one pending write

Root documents are the keys that end with ':' (an empty raw namespace); the full saver's
checkpoint keys always end with a checkpoint id, so the two never match the same pattern.
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
    Found,
    IndexedLayout,
    apply_pending,
    broken_with_value,
    entry_times,
    first,
    json_paths,
    pending_messages,
    ttl_seconds,
)
from conversations.checkpoints.messages import may_hold_nul, parse_json, parse_state, parse_time
from conversations.exceptions import MalformedCheckpoint

# KEYS[1] the document, KEYS[2..3] the two registries, then everything else.
DELETE_IF_UNCHANGED = """
local current = redis.call('JSON.GET', KEYS[1], '$.checkpoint.id')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) ~= tonumber(ARGV[2]) then return 0 end
for i = 1, #KEYS, %d do
    redis.call('UNLINK', unpack(KEYS, i, math.min(i + %d - 1, #KEYS)))
end
return 1
""" % (UNLINK_CHUNK, UNLINK_CHUNK)


class ShallowLayout(IndexedLayout):
    name = "shallow"
    delete_script = DELETE_IF_UNCHANGED

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint = conf.get("CHECKPOINT_PREFIX")
        self.write = conf.get("CHECKPOINT_WRITE_PREFIX")
        self.zset = conf.get("WRITE_KEYS_ZSET_PREFIX")

    def scan_pattern(self) -> str:
        return f"{self.checkpoint}:*:"

    def registries(self, thread: str, ns: str = EMPTY_NS) -> list[str]:
        return [f"write_registry:{thread}:{ns}:shallow", f"{self.zset}:{thread}:{ns}:shallow"]

    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Broken]]:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("JSON.GET", key, "$.checkpoint.ts", "$.checkpoint_ts")
            pipe.pttl(key)
        replies = pipe.execute(raise_on_error=False)
        candidates, broken = [], []
        for i, key in enumerate(keys):
            reply, pttl = replies[2 * i], replies[2 * i + 1]
            try:
                if isinstance(reply, Exception):
                    raise MalformedCheckpoint(f"not a JSON document ({reply})")
                paths = json_paths(reply)
                if paths is None:
                    continue  # removed since the scan saw it
                stamp = first(paths, "$.checkpoint.ts", "$.checkpoint_ts")
                if stamp is None:
                    raise MalformedCheckpoint("the checkpoint has no time (checkpoint.ts)")
                checkpoint_time = parse_time(stamp)
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, key, str(exc)))
                continue
            candidates.append(
                Candidate(
                    key=key,
                    thread_id=key[len(self.checkpoint) + 1 : -1],
                    checkpoint_ns="",
                    checkpoint_key=key,
                    checkpoint_time=checkpoint_time,
                    ttl_seconds=ttl_seconds(pttl),
                )
            )
        return candidates, broken

    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Broken]]:
        pipe = client.pipeline(transaction=False)
        for candidate in due:
            pipe.execute_command("JSON.GET", candidate.key)
            for registry in self.registries(candidate.thread_id):
                pipe.zrange(registry, 0, -1)
        replies = pipe.execute(raise_on_error=False)

        read: list[tuple[Candidate, Any, list[str]]] = []
        for i, candidate in enumerate(due):
            raw, *registries = replies[3 * i : 3 * i + 3]
            if raw is None:
                continue
            write_keys = [k.decode("utf-8", "surrogateescape") for r in registries if isinstance(r, list) for k in r]
            read.append((candidate, raw, write_keys))

        pipe = client.pipeline(transaction=False)
        for _, _, write_keys in read:
            for key in write_keys:
                pipe.execute_command("JSON.GET", key)
        write_replies = iter(pipe.execute(raise_on_error=False))

        conversations, broken = [], []
        for candidate, raw, write_keys in read:
            writes = [(key, next(write_replies)) for key in write_keys]
            try:
                conversations.append(self._conversation(candidate, raw, writes))
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(broken_with_value(client, candidate.key, str(exc)))
        return conversations, broken

    def _conversation(self, candidate: Candidate, raw: Any, writes: list[tuple[str, Any]]) -> Conversation:
        if isinstance(raw, Exception):
            raise MalformedCheckpoint(f"not a JSON document ({raw})")
        doc = parse_json(raw, "the checkpoint")
        if not isinstance(doc, dict) or not isinstance(doc.get("checkpoint"), dict):
            raise MalformedCheckpoint("the document has no 'checkpoint' object")
        checkpoint = doc["checkpoint"]
        checkpoint_id = checkpoint.get("id")
        if not isinstance(checkpoint_id, str) or not checkpoint_id:
            raise MalformedCheckpoint("the checkpoint has no id")
        state = parse_state(checkpoint.get("channel_values"), self.fields)
        # The registries may still list writes of an earlier checkpoint: keep this one's.
        current = [(k, v) for k, v in writes if _write_of(v, checkpoint_id)]
        messages, state_fields, nul_in_writes = pending_messages(current, self.fields)
        apply_pending(state, messages, state_fields, self.fields, check=may_hold_nul(raw) or nul_in_writes)
        assert candidate.checkpoint_time is not None
        return Conversation(
            candidate=candidate,
            source=self.name,
            checkpoint_id=checkpoint_id,
            state=state,
            timestamps=entry_times(state.messages, candidate.checkpoint_time, []),
            guard=[json.dumps([checkpoint_id], separators=(",", ":")), str(len(writes))],
            scope=f"{self.name}:{candidate.thread_id}",
        )

    def thread_keys(self, conversation: Conversation, documents: list[str], writes: list[str]) -> list[str]:
        """The thread's keys, the document and its two registries first, for the script."""
        thread = conversation.candidate.thread_id
        first = [conversation.candidate.key, *self.registries(thread)]
        keys = set(documents) | set(writes)
        prefix = f"{self.checkpoint}:{thread}:"
        for key in documents:
            if key.startswith(prefix):
                ns = key[len(prefix):] or EMPTY_NS
                keys.update(self.registries(thread, ns))
                keys.add(f"current_checkpoint:{thread}:{ns}:shallow")
        return first + sorted(keys - set(first))

    def written_since_read(self, conversation: Conversation, documents: Found, writes: Found) -> bool:
        """A pending write stored but not yet registered (the saver registers it afterwards) is
        invisible to the script's guard: seeing more writes than were read means the bot is
        writing, so the conversation stays for the next run."""
        return sum(1 for _, f in writes if f.get("checkpoint_ns") == EMPTY_NS) > int(conversation.guard[1])


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
