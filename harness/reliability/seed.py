"""The backlog a trial seeds, and what the archive must then hold of it.

Every layout the archiver reads: chains of RedisSaver checkpoints (some with messages only
in pending writes), shallow-saver documents (both registries), the operations guide's plain
strings (LangChain envelopes, and role/content dicts without ids), and conversations written
by the real langgraph savers (harness/lgwriter.py). Besides: the bot that keeps writing
through the real savers while the archiver runs (the writer scenario), and values the
archiver must quarantine and never run (the hostile scenario).

Each seeded conversation carries the messages the archive must hold, in order, and the key
whose existence means it is still in Redis.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import lgwriter
from harness.documents import checkpoint

if TYPE_CHECKING:
    from harness.reliability.processes import Target

EMPTY_NS = "__empty__"

# Words with what COPY's text format and JSON must escape: tabs, newlines, backslashes, the
# \N of NULL and the \. that ends COPY data, quotes, and text beyond ASCII.
WORDS = (
    "pedido envío factura devolución cita mañana gracias hola cuándo dónde precio talla Málaga "
    "A\tCoruña ruta\\C:\\temp \\N \\. «urgente» \"ok\" 'vale' 注文 配送 😊 🙏 ✅ ñandú peluquería "
    "línea1\nlínea2 retorno\r\n 100% $5 {json} [x] <b>"
).split(" ")


@dataclass(frozen=True)
class Msg:
    """One seeded message as the archive must hold it."""

    id: str | None
    role: str
    content: Any  # a string, or the list of content blocks

    def identity(self) -> str:
        if self.id:
            return "id:" + self.id
        return "noid:" + json.dumps([self.role, self.content], ensure_ascii=False, sort_keys=True)


@dataclass
class Seeded:
    conversation_id: str
    layout: str  # redis, shallow, plain, or real-<saver>
    presence: str  # the key whose existence means "still in Redis"
    messages: list[Msg]


@dataclass
class Backlog:
    conversations: dict[str, Seeded] = field(default_factory=dict)
    hostile_keys: set[str] = field(default_factory=set)  # values that must be quarantined and kept

    @property
    def message_count(self) -> int:
        return sum(len(c.messages) for c in self.conversations.values())

    def add(self, seeded: Seeded) -> None:
        self.conversations[seeded.conversation_id] = seeded


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def lc_message(role: str, content: Any, mid: str | None, **extra: Any) -> dict[str, Any]:
    name = {"human": "HumanMessage", "ai": "AIMessage", "tool": "ToolMessage", "system": "SystemMessage"}[role]
    kwargs: dict[str, Any] = {"content": content, "type": role, **extra}
    if mid is not None:
        kwargs["id"] = mid
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", name], "kwargs": kwargs}


def lc_conversation(rng: random.Random, size: int) -> tuple[list[dict[str, Any]], list[Msg]]:
    """A human/ai exchange with the odd tool call and content-block list; every message has an id."""
    stored: list[dict[str, Any]] = []
    expected: list[Msg] = []
    while len(stored) < size:
        i = len(stored)
        role = "human" if i % 2 == 0 else "ai"
        mid = f"{'h' if role == 'human' else 'run'}-{uuid.UUID(int=rng.getrandbits(128))}"
        if role == "ai" and rng.random() < 0.15 and len(stored) + 2 <= size:
            call = f"call_{rng.getrandbits(40):x}"
            stored.append(lc_message("ai", "", mid, tool_calls=[{"name": "lookup_order", "args": {"id": i}, "id": call, "type": "tool_call"}]))
            expected.append(Msg(mid, "ai", ""))
            tid = f"t-{uuid.UUID(int=rng.getrandbits(128))}"
            body = json.dumps({"estado": text(rng, 1, 4)}, ensure_ascii=False)
            stored.append(lc_message("tool", body, tid, tool_call_id=call, name="lookup_order", status="success"))
            expected.append(Msg(tid, "tool", body))
            continue
        if role == "ai" and rng.random() < 0.1:
            content: Any = [{"type": "text", "text": text(rng, 3, 20)}, {"type": "text", "text": text(rng, 1, 5)}]
        else:
            content = text(rng, 3, 25) if role == "human" else text(rng, 10, 60)
        stored.append(lc_message(role, content, mid))
        expected.append(Msg(mid, role, content))
    return stored, expected


def simple_conversation(rng: random.Random, size: int, start: datetime) -> tuple[list[dict[str, Any]], list[Msg]]:
    """Role/content dicts without ids (archived by digest), with repeats such as "gracias" twice."""
    stored, expected = [], []
    for i in range(size):
        role = "user" if i % 2 == 0 else "assistant"
        content = "gracias" if rng.random() < 0.1 else text(rng, 3, 30)
        stamp = (start + timedelta(seconds=30 * i)).isoformat()
        stored.append({"role": role, "content": content, "timestamp": stamp})
        expected.append(Msg(None, "human" if role == "user" else "ai", content))
    return stored, expected


def checkpoint_doc(thread: str, cid: str, parent: str, ts: datetime, values: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint document as RedisSaver stores it (harness/documents.py's shape)."""
    doc = checkpoint(thread, cid, parent, ts, values["messages"], values.get("customer_id"))
    doc["checkpoint"]["channel_values"].update(values)
    return doc


def write_doc(thread: str, cid: str, task: str, idx: int, channel: str, kind: str, blob: bytes) -> dict[str, Any]:
    return {
        "thread_id": thread, "checkpoint_ns": EMPTY_NS, "checkpoint_id": cid, "task_id": task,
        "task_path": "~__pregel_pull, agent", "idx": idx, "channel": channel, "type": kind,
        "blob": base64.b64encode(blob).decode(),
    }


def new_id(rng: random.Random, ts: datetime) -> str:
    """A checkpoint id that sorts by time, as LangGraph's uuid6 ids do."""
    return f"{int(ts.timestamp() * 1e6):016x}-{rng.getrandbits(48):012x}"


def seed_saver(pipe: Any, rng: random.Random, thread: str, start: datetime, size: int) -> list[Msg]:
    """RedisSaver: the last 1-4 root checkpoints of the thread, each holding the messages so
    far, a latest pointer, and on a fifth of threads the newest messages only in pending writes."""
    stored, expected = lc_conversation(rng, size)
    pending = rng.choice([1, 2]) if rng.random() < 0.2 and size > 2 else 0
    held_final = size - pending
    turns = list(range(2, held_final, 2))[-3:] + [held_final]
    parent = ""
    customer = f"cust-{rng.randint(1, 5000)}"
    for n, end in enumerate(turns):
        ts = start + timedelta(minutes=n)
        cid = new_id(rng, ts)
        values = {"messages": stored[:end], "conversation_id": thread, "customer_id": customer}
        pipe.execute_command("JSON.SET", f"checkpoint:{thread}:{EMPTY_NS}:{cid}", "$", json.dumps(checkpoint_doc(thread, cid, parent, ts, values), ensure_ascii=False))
        parent = cid
    pipe.set(f"checkpoint_latest:{thread}:{EMPTY_NS}", f"checkpoint:{thread}:{EMPTY_NS}:{parent}")
    if pending:
        task = str(uuid.UUID(int=rng.getrandbits(128)))
        writes = [
            ("messages", "json", json.dumps(stored[held_final:], ensure_ascii=False).encode()),
            ("branch:to:agent", "null", b""),
        ]
        zset = f"write_keys_zset:{thread}:{EMPTY_NS}:{parent}"
        for idx, (channel, kind, blob) in enumerate(writes):
            key = f"checkpoint_write:{thread}:{EMPTY_NS}:{parent}:{task}:{idx}"
            pipe.execute_command("JSON.SET", key, "$", json.dumps(write_doc(thread, parent, task, idx, channel, kind, blob)))
            pipe.zadd(zset, {key: idx})
    return expected


def seed_shallow(pipe: Any, rng: random.Random, thread: str, start: datetime, size: int) -> list[Msg]:
    """A shallow saver's one document per thread, with pending writes in either registry."""
    stored, expected = lc_conversation(rng, size)
    pending = 1 if rng.random() < 0.2 and size > 2 else 0
    cid = new_id(rng, start)
    values = {"messages": stored[: size - pending], "conversation_id": thread, "customer_id": f"cust-{rng.randint(1, 5000)}"}
    doc = checkpoint_doc(thread, cid, "", start, values)
    doc.pop("parent_checkpoint_id")
    pipe.execute_command("JSON.SET", f"checkpoint:{thread}:", "$", json.dumps(doc, ensure_ascii=False))
    if pending:
        registry = rng.choice([f"write_registry:{thread}:{EMPTY_NS}:shallow", f"write_keys_zset:{thread}:{EMPTY_NS}:shallow"])
        task = str(uuid.UUID(int=rng.getrandbits(128)))
        key = f"checkpoint_write:{thread}:{EMPTY_NS}:{cid}:{task}:0"
        blob = json.dumps(stored[size - pending :], ensure_ascii=False).encode()
        pipe.execute_command("JSON.SET", key, "$", json.dumps(write_doc(thread, cid, task, 0, "messages", "json", blob)))
        pipe.zadd(registry, {key: 0})
    return expected


def seed_plain(pipe: Any, rng: random.Random, conversation_id: str, start: datetime, size: int) -> tuple[str, list[Msg]]:
    """The operations guide's plain string, in its three accepted shapes."""
    if rng.random() < 0.5:
        stored, expected = lc_conversation(rng, size)
    else:
        stored, expected = simple_conversation(rng, size, start)
    state = {"messages": stored, "conversation_id": conversation_id}
    if rng.random() < 0.8:
        state["customer_id"] = f"cust-{rng.randint(1, 5000)}"
    shape = rng.random()
    if shape < 0.8:
        value: dict[str, Any] = {"v": 4, "ts": (start + timedelta(minutes=size)).isoformat(), "id": str(uuid.UUID(int=rng.getrandbits(128))), "channel_values": state}
    elif shape < 0.9:
        value = {"data": {**state, "ts": (start + timedelta(minutes=size)).isoformat()}}
    else:
        value = {**state, "ts": (start + timedelta(minutes=size)).isoformat()}
    key = f"langgraph:checkpoint:{conversation_id}:{rng.randint(1_600_000_000, 1_800_000_000)}"
    pipe.set(key, json.dumps(value, ensure_ascii=False))
    return key, expected


def seed_backlog(target: Target, rng: random.Random, conversations: int, real: int = 0) -> Backlog:
    """About `conversations` conversations, 30 hours old (due), spread over the layouts; plus
    `real` conversations written now by the real savers with a 30-minute TTL (due because
    their keys are about to expire)."""
    backlog = Backlog()
    client = target.client()
    pipe = client.pipeline(transaction=False)
    now = datetime.now(timezone.utc)
    for i in range(conversations):
        size = rng.randint(3, 40)
        start = now - timedelta(hours=30) + timedelta(seconds=rng.randint(0, 3600))
        kind = rng.choices(["redis", "shallow", "plain"], weights=[45, 20, 35])[0]
        if kind == "redis":
            thread = f"wa:346{rng.randint(10**7, 10**8 - 1)}:{i}"
            backlog.add(Seeded(thread, kind, f"checkpoint_latest:{thread}:{EMPTY_NS}", seed_saver(pipe, rng, thread, start, size)))
        elif kind == "shallow":
            thread = f"sh-{i}-ñ{rng.getrandbits(24):x}"
            backlog.add(Seeded(thread, kind, f"checkpoint:{thread}:", seed_shallow(pipe, rng, thread, start, size)))
        else:
            conversation_id = f"wa-msg-{i}-{rng.getrandbits(32):x}"
            key, expected = seed_plain(pipe, rng, conversation_id, start, size)
            backlog.add(Seeded(conversation_id, kind, key, expected))
        if len(pipe) >= 400:
            pipe.execute()
    pipe.execute()
    for seeded in seed_real(target.redis_url, rng, real):
        backlog.add(seeded)
    return backlog


def seed_real(redis_url: str, rng: random.Random, count: int, ttl_minutes: float | None = 30) -> list[Seeded]:
    """Conversations written by the real langgraph savers; the expected messages are LangGraph's own get_state."""
    out = []
    for i in range(count):
        saver = lgwriter.SAVERS[i % len(lgwriter.SAVERS)]
        thread = f"real:{saver}:{i}:{rng.getrandbits(32):x}"
        shape = {"tools": rng.random() < 0.5, "blocks": rng.random() < 0.3, "subgraph": rng.random() < 0.3, "pending": rng.random() < 0.3}
        turns = [text(rng, 2, 10) for _ in range(rng.randint(1, 3))]
        state = lgwriter.write_conversation(redis_url, thread, turns, saver=saver, customer_id=f"cust-{i}", ttl_minutes=ttl_minutes, **shape)
        presence = f"checkpoint_latest:{thread}:{EMPTY_NS}" if saver in ("redis", "async") else f"checkpoint:{thread}:"
        out.append(Seeded(thread, f"real-{saver}", presence, [Msg(m["id"], m["type"], m["content"]) for m in state]))
    return out


class Bot:
    """Writers continuing conversations through the real savers; what each turn's get_state
    showed is what the archive must hold in the end."""

    def __init__(self, redis_url: str, names: list[str]) -> None:
        self.redis_url = redis_url
        self.expected: dict[str, list[Msg]] = {name: [] for name in names}
        self.seen: dict[str, set[str]] = {name: set() for name in names}
        self.turns: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()

    def write(self, owned: list[str], seed: int) -> None:
        local = random.Random(seed)
        while not self.stop.is_set():
            name = local.choice(owned)
            saver = name.split(":")[1]
            try:
                state = lgwriter.write_conversation(self.redis_url, name, [text(local, 2, 8)], saver=saver,
                                                    tools=local.random() < 0.3, blocks=local.random() < 0.2)
            except Exception as exc:  # noqa: BLE001 - a writer that fails has found something: keep it
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            self.turns[name] += 1
            for m in state:
                if m["id"] not in self.seen[name]:
                    self.seen[name].add(m["id"])
                    self.expected[name].append(Msg(m["id"], m["type"], m["content"]))
            time.sleep(local.uniform(0, 0.3))


def hostile_values(marker: Path, big_mb: int = 10) -> list[tuple[str, bytes]]:
    """(name, value) pairs for plain-layout keys. Each would run `touch marker` if anything
    unpickled it, imported what it names, or unpacked its msgpack extension."""
    import ormsgpack

    touch = f"touch {marker}"
    lc_evil = {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {"command": touch}}
    lc_popen = {"lc": 1, "type": "constructor", "id": ["subprocess", "Popen"], "kwargs": {"args": ["touch", str(marker)]}}

    def state(messages: list[Any]) -> str:
        return json.dumps({"v": 4, "ts": "2020-01-01T00:00:00+00:00", "id": "x", "channel_values": {"messages": messages}})

    deep = "[" * 3000 + "]" * 3000
    return [
        ("pickle", b"cos\nsystem\n(S'" + touch.encode() + b"'\ntR."),
        ("msgpack-ext", ormsgpack.packb(ormsgpack.Ext(0, ormsgpack.packb(["os", "system", touch])))),
        ("lc-os-system", state([lc_evil]).encode()),
        ("lc-subprocess", state([lc_popen]).encode()),
        ("random-bytes", bytes(random.Random(7).getrandbits(8) for _ in range(512))),
        ("truncated-json", state([{"role": "user", "content": "hola"}]).encode()[:-7]),
        ("deep-json", ('{"ts": "2020-01-01T00:00:00+00:00", "channel_values": {"messages": ' + deep + "}}").encode()),
        ("deep-json-long-number", ('{"n": 123456789012345678901234, "ts": "2020-01-01T00:00:00+00:00", "channel_values": {"messages": ' + deep + "}}").encode()),
        ("wrong-types", state([{"role": 7, "content": {"a": 1}}]).encode()),
        ("nul-in-content", state([{"role": "user", "content": "a\u0000b"}]).encode()),
        ("lone-surrogate", b'{"n": 123456789012345678901234, "ts": "2020-01-01T00:00:00+00:00", "channel_values": {"messages": [{"role": "user", "content": "a\\ud800b"}]}}'),
        ("deep-metadata", state([{"role": "user", "content": "hola", "additional_kwargs": {"x": json.loads("[" * 400 + "]" * 400)}}]).encode()),
        (f"garbage-{big_mb}mb", b"\xff" + os.urandom(big_mb * 2**20 // 2).hex().encode()),
    ]
