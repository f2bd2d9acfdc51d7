"""The plain-string layout of the operations guide.

    langgraph:checkpoint:{conversation_id}:{checkpoint_ns}   string: one JSON checkpoint

The value is a checkpoint ({"v", "ts", "id", "channel_values": {...}}), or, from older
writers, {"data": {...state...}} or the state itself. Each key is its own conversation
record; the delete compares the value's SHA-1 so a key rewritten after we read it stays.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import redis

from conversations import conf
from conversations.checkpoints import history
from conversations.checkpoints.base import Candidate, Check, Conversation, Guard, Held, Layout, Unreadable
from conversations.checkpoints.held import held_in
from conversations.checkpoints.history import Snapshot
from conversations.checkpoints.jsontext import may_hold_nul, parse_json
from conversations.checkpoints.messages import parse_time
from conversations.checkpoints.redisjson import decode, read_with_pttl, ttl_seconds
from conversations.checkpoints.state import check_storable, message_keys, parse_state
from conversations.exceptions import MalformedCheckpoint

DELETE_IF_UNCHANGED = """
local value = redis.call('GET', KEYS[1])
if not value then return -1 end
if redis.sha1hex(value) ~= ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[1])
return 1
"""


class PlainLayout(Layout):
    name = "plain"

    def __init__(self) -> None:
        super().__init__()
        self.prefix = conf.plain_prefix()

    def scan_pattern(self) -> str:
        return self.prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?").replace("[", "\\[") + "*"

    def probe(self, client: redis.Redis, keys: list[str]) -> tuple[list[Candidate], list[Unreadable]]:
        # The value is one small document: read it now, as the age is inside it.
        candidates, broken = [], []
        for key, raw, pttl in read_with_pttl(client, keys, "GET"):
            if raw is None:
                continue
            if isinstance(raw, Exception):
                kind = decode(client.type(key)) or "none"
                broken.append(
                    Unreadable(
                        key=key,
                        error=f"a {kind} where a JSON string was expected",
                        source=self.name,
                        redis_type=kind,
                        raw_value=client.dump(key) or b"",
                    )
                )
                continue
            rest = key[len(self.prefix):]
            conversation_id, _, ns = rest.rpartition(":") if ":" in rest else (rest, "", "")
            try:
                checkpoint = _checkpoint(parse_json(raw, "the value"))
                checkpoint_time = _time_of(checkpoint, self.fields.messages)
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(Unreadable(key=key, error=str(exc), source=self.name, redis_type="string", raw_value=raw))
                continue
            candidates.append(
                Candidate(
                    key=key,
                    thread_id=conversation_id,
                    checkpoint_ns=ns,
                    checkpoint_key=key,
                    checkpoint_time=checkpoint_time,
                    ttl_seconds=ttl_seconds(pttl),
                    value=(raw, checkpoint),
                    version=hashlib.sha1(raw).hexdigest(),
                )
            )
        return candidates, broken

    def load(self, client: redis.Redis, due: list[Candidate]) -> tuple[list[Conversation], list[Unreadable]]:
        conversations, broken = [], []
        for candidate in due:
            raw, checkpoint = candidate.value
            try:
                conversations.append(self._conversation(candidate, raw, checkpoint))
            except (MalformedCheckpoint, ValueError) as exc:
                broken.append(Unreadable(key=candidate.key, error=str(exc), source=self.name, redis_type="string", raw_value=raw))
        return conversations, broken

    def _conversation(self, candidate: Candidate, raw: bytes, checkpoint: dict[str, Any]) -> Conversation:
        """One key is one snapshot: the history is its state (and a run's unapplied input)."""
        state = parse_state(checkpoint.get("channel_values", checkpoint), self.fields)
        current = state.current()
        if not current:
            raise MalformedCheckpoint(f"the state's {self.fields.messages!r} list is empty")
        if may_hold_nul(raw):
            check_storable(state, current)
        newest = candidate.checkpoint_time
        if newest is None:
            raise MalformedCheckpoint("neither the checkpoint nor its messages carry a time")
        scope = f"{self.name}:{candidate.key}"
        checkpoint_id = str(checkpoint.get("id") or "")
        snapshot = Snapshot(candidate.key, "", checkpoint_id, newest, ())
        # The key's own suffix stands where a saver's namespace would, as the guide names it.
        entries = history.single(snapshot, current, message_keys(current, scope), candidate.checkpoint_ns)
        return Conversation(
            candidate=candidate,
            source=self.name,
            checkpoint_id=checkpoint_id,
            state=state,
            entries=entries,
            guard=Guard(hashlib.sha1(raw).hexdigest()),
            scope=scope,
        )

    def delete_many(self, client: redis.Redis, conversations: list[Conversation], check: Check | None = None) -> list[bool]:
        """The script deletes a key only if it still holds the value that was read (its digest),
        so the guard is shown that value's messages."""
        allowed = [True] * len(conversations)
        if check is not None:
            items = []
            for conversation in conversations:
                held = Held()
                held_in(conversation.candidate.value[1], held)
                items.append((conversation, held))
            allowed = check(items)
        script = client.register_script(DELETE_IF_UNCHANGED)
        pipe = client.pipeline(transaction=False)
        for conversation, ok in zip(conversations, allowed):
            if ok:
                script(keys=[conversation.candidate.key], args=conversation.guard.args(), client=pipe)
        results = iter(pipe.execute())
        return [ok and next(results) != 0 for ok in allowed]


def _checkpoint(doc: Any) -> dict[str, Any]:
    """The checkpoint object of a plain value, whichever of the accepted shapes it has."""
    if not isinstance(doc, dict):
        raise MalformedCheckpoint(f"the value is a JSON {type(doc).__name__}, not an object")
    for name in ("checkpoint", "data"):
        inner = doc.get(name)
        if isinstance(inner, dict):
            return inner
    return doc


def _time_of(checkpoint: dict[str, Any], messages_field: str) -> datetime | None:
    """The checkpoint's `ts`; for older writers without one, the newest message timestamp."""
    if checkpoint.get("ts") is not None:
        return parse_time(checkpoint["ts"])
    state = checkpoint.get("channel_values", checkpoint)
    messages = state.get(messages_field) if isinstance(state, dict) else None
    times = []
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and message.get("timestamp") is not None:
            try:
                times.append(parse_time(message["timestamp"]))
            except ValueError:
                pass
    return max(times, default=None)
