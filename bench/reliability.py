#!/usr/bin/env python
"""Try hard to break the archiver's promise, and count what breaks.

The promise: every message is in PostgreSQL or still in Redis, and after one clean run it
is in PostgreSQL exactly once. Each scenario seeds a backlog whose messages are known,
runs the real `manage.py archive_checkpoints` as its own process while something goes
wrong, checks the promise at once (a message may be in both places, never in neither),
runs the archiver once more without interference and compares the archive with what was
seeded: message ids and contents, in order.

    python bench/reliability.py                                  (full: 30 SIGKILL trials, 3000 conversations)
    python bench/reliability.py --trials 3 --conversations 200   (CI: keeps it working)

Scenarios (--scenarios, comma-separated; all by default):
  sigkill         the archiver is SIGKILLed at random moments, 1 to 3 times per trial
  pg-terminate    its PostgreSQL connections are terminated again and again during a run
  pg-restart      its PostgreSQL server (a throwaway cluster on port 5499) stops mid-run and comes back
  redis-kill      Redis drops its connections (CLIENT KILL) again and again during a run
  redis-restart   its Redis server shuts down mid-run (saving its data) and comes back
  writer          the bot keeps writing, through the real LangGraph savers, while runs go on
  concurrent      two and three archivers are started at once
  hostile         unreadable, dangerous and huge values mixed into the backlog
  disk-full       the health file's filesystem is full (a tiny tmpfs; needs root)

The backlog mixes every layout the archiver reads: chains of RedisSaver checkpoints (some
with messages only in pending writes), shallow-saver documents (both registries), the
operations guide's plain strings (LangChain envelopes, and role/content dicts without ids),
and conversations written by the real langgraph savers (harness/lgwriter.py).

It uses its own database (relia_archive, dropped and created) and its own Redis server
(port 6396, started with scripts/start-redis-stack.sh); pg-restart creates and drops its
own PostgreSQL cluster. Figures go to bench/results/reliability.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.servers import start_redis, stop_redis  # noqa: E402

PG_ADMIN_URL = os.environ.get("RELIA_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("RELIA_DB_NAME", "relia_archive")
REDIS_PORT = int(os.environ.get("RELIA_REDIS_PORT", "6396"))
# The throwaway PostgreSQL cluster of pg-restart (Debian's pg_createcluster).
PG_VERSION = os.environ.get("RELIA_PG_VERSION", "15")
PG_CLUSTER = os.environ.get("RELIA_PG_CLUSTER", "relia")
PG_CLUSTER_PORT = int(os.environ.get("RELIA_PG_CLUSTER_PORT", "5499"))

LOCK_KEY = "conversation-archiver:lock"
LOCK_TIMEOUT_MS = 300_000  # conf.py's LOCK_TIMEOUT_SECONDS
# The archiver's connections carry this application_name, so only they are terminated.
APP_NAME = "relia-archiver"
TABLES = ("conversation_history", "archived_conversation", "quarantined_checkpoint", "archive_run")
EMPTY_NS = "__empty__"
IN_PROGRESS = "Another archival run is in progress"

# Words with what COPY's text format and JSON must escape: tabs, newlines, backslashes, the
# \N of NULL and the \. that ends COPY data, quotes, and text beyond ASCII.
WORDS = (
    "pedido envío factura devolución cita mañana gracias hola cuándo dónde precio talla Málaga "
    "A\tCoruña ruta\\C:\\temp \\N \\. «urgente» \"ok\" 'vale' 注文 配送 😊 🙏 ✅ ñandú peluquería "
    "línea1\nlínea2 retorno\r\n 100% $5 {json} [x] <b>"
).split(" ")


# --- what was seeded --------------------------------------------------------------------


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


@dataclass
class Target:
    """Where one archiver under test reads and writes."""

    db_url: str
    redis_url: str
    health_file: Path
    settings_module: str = "archive_site.settings"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, protocol=2)

    def env(self, **extra: Any) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings_module,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "ARCHIVER_HEALTH_FILE": str(self.health_file),
            "ARCHIVER_RETRY_DELAY_SECONDS": "1",
            "LOG_LEVEL": "INFO",
            "PGAPPNAME": APP_NAME,
            "PYTHONUNBUFFERED": "1",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def reset(self) -> None:
        """Empty Redis (keeping the savers' search indexes) and the archive tables."""
        client = self.client()
        client.flushdb()
        create_indexes(self.redis_url)
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        self.health_file.unlink(missing_ok=True)


def create_indexes(redis_url: str) -> None:
    """The search indexes exactly as langgraph-checkpoint-redis creates them."""
    from langgraph.checkpoint.redis import RedisSaver

    with RedisSaver.from_conn_string(redis_url) as saver:
        saver.setup()


# --- seeding ------------------------------------------------------------------------------


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
    """A checkpoint document as RedisSaver stores it (bench/archive_benchmark.py's shape)."""
    from bench.archive_benchmark import checkpoint

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
    from harness import lgwriter

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


# --- checking -----------------------------------------------------------------------------


@dataclass
class Tally:
    messages: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0  # rows matching no seeded message (changed content, foreign conversation)
    misordered: int = 0  # conversations whose archived order differs from the seeded order
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.messages += other.messages
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.unexpected += other.unexpected
        self.misordered += other.misordered
        self.examples = (self.examples + other.examples)[:10]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.misordered)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "lost": self.lost, "duplicated": self.duplicated,
                "unexpected": self.unexpected, "misordered": self.misordered, "examples": self.examples}


def archived_rows(db_url: str) -> dict[str, list[Msg]]:
    rows: dict[str, list[Msg]] = {}
    with psycopg.connect(db_url) as conn:
        cursor = conn.execute(
            "SELECT conversation_id, message_id, role, content, content_blocks FROM conversation_history "
            "ORDER BY conversation_id, position"
        )
        for conversation_id, message_id, role, content, blocks in cursor:
            rows.setdefault(conversation_id, []).append(Msg(message_id, role, blocks if blocks is not None else content))
    return rows


def compare(backlog: Backlog, rows: dict[str, list[Msg]], in_redis: set[str] | None = None) -> Tally:
    """The archive against the seeded messages. With `in_redis` (conversations still in Redis)
    a conversation may be partly or not at all archived: only what is gone from Redis must be
    in the archive (the check right after a crash); without it, everything must be."""
    tally = Tally(messages=backlog.message_count)
    for conversation_id, seeded in backlog.conversations.items():
        got = rows.get(conversation_id, [])
        want = Counter(m.identity() for m in seeded.messages)
        have = Counter(m.identity() for m in got)
        missing = sum((want - have).values())
        extra_known = sum(have[k] - want[k] for k in have if k in want and have[k] > want[k])
        foreign = sum(n for k, n in have.items() if k not in want)
        changed = sum(1 for m in got if m.id and ("id:" + m.id) in want and m not in seeded.messages)
        still_there = in_redis is not None and conversation_id in in_redis
        if missing and not still_there:
            tally.lost += missing
            tally.examples.append(f"{conversation_id}: {missing} of {len(seeded.messages)} messages in neither store")
        tally.duplicated += extra_known
        tally.unexpected += foreign + changed
        if (extra_known or foreign or changed) and len(tally.examples) < 10:
            odd = [k[:120] for k in have if k not in want or have[k] > want[k]]
            tally.examples.append(f"{conversation_id}: {extra_known} duplicated, {foreign + changed} unexpected rows: {odd[:3]}")
        if not missing and not extra_known and [i for i in (m.identity() for m in got) if i in want] != [m.identity() for m in seeded.messages]:
            tally.misordered += 1
            tally.examples.append(f"{conversation_id}: archived in another order")
    for conversation_id, got in rows.items():
        if conversation_id not in backlog.conversations:
            tally.unexpected += len(got)
            tally.examples.append(f"{conversation_id}: {len(got)} rows of a conversation never seeded")
    tally.examples = tally.examples[:10]
    return tally


def still_in_redis(client: redis.Redis, backlog: Backlog) -> set[str]:
    """Conversations whose current state is still readable in Redis: the presence key exists,
    and for a pointer, the checkpoint it names exists too."""
    items = list(backlog.conversations.values())
    pipe = client.pipeline(transaction=False)
    for seeded in items:
        if seeded.presence.startswith("checkpoint_latest:"):
            pipe.get(seeded.presence)
        else:
            pipe.exists(seeded.presence)
    first = pipe.execute()
    pipe = client.pipeline(transaction=False)
    pointed = []
    for seeded, reply in zip(items, first):
        if seeded.presence.startswith("checkpoint_latest:") and reply:
            pipe.exists(reply)
            pointed.append(seeded.conversation_id)
    present = {cid for cid, ok in zip(pointed, pipe.execute()) if ok}
    present |= {s.conversation_id for s, reply in zip(items, first) if not s.presence.startswith("checkpoint_latest:") and reply}
    return present


def leftover_keys(client: redis.Redis, backlog: Backlog) -> list[str]:
    """Keys still in Redis after a clean run, other than the hostile values kept on purpose."""
    left = []
    for raw in client.scan_iter(count=1000):
        key = raw.decode("utf-8", "backslashreplace")
        if key not in backlog.hostile_keys:
            left.append(key)
    return sorted(left)


# --- running the archiver -----------------------------------------------------------------


@dataclass
class Run:
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    killed: bool = False

    @property
    def summary(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


class Archiver:
    """`manage.py archive_checkpoints` as its own process, output kept in files (never a pipe
    that could fill up and stall it)."""

    def __init__(self, target: Target, *args: str, **env: Any) -> None:
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "archive_checkpoints", *args],
            cwd=ROOT, env=target.env(**env), stdout=self.out, stderr=self.err,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_so_far(self) -> str:
        """What the run has logged (stderr) up to now; it keeps running."""
        return os.pread(self.err.fileno(), 1 << 24, 0).decode("utf-8", "replace")

    def kill(self) -> bool:
        """SIGKILL; True when the process was still running."""
        if self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return True

    def wait(self, timeout: float = 600) -> Run:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return self.result()

    def result(self, killed: bool = False) -> Run:
        self.out.seek(0)
        self.err.seek(0)
        run = Run(self.proc.returncode, self.out.read().decode("utf-8", "replace"), self.err.read().decode("utf-8", "replace"),
                  time.monotonic() - self.began, killed)
        self.out.close()
        self.err.close()
        return run


def archive_once(target: Target, *args: str, **env: Any) -> Run:
    return Archiver(target, *args, **env).wait()


def expire_lock(client: redis.Redis) -> int | None:
    """A killed run cannot release the lock; it expires within LOCK_TIMEOUT_SECONDS. Check that
    it will, then let it expire now. Returns the time it had left (ms), None if there was none."""
    left = client.pttl(LOCK_KEY)
    if left == -2:
        return None
    if not 0 < left <= LOCK_TIMEOUT_MS:
        raise AssertionError(f"the run lock has no expiry ({left}): a killed run would block every later run")
    client.pexpire(LOCK_KEY, 1)
    time.sleep(0.01)
    return left


def count_rows(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT COUNT(*) FROM conversation_history").fetchone()[0]


def runs_left_running(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT COUNT(*) FROM archive_run WHERE status = 'running'").fetchone()[0]


def health(target: Target) -> dict[str, Any] | None:
    try:
        return json.loads(target.health_file.read_text())
    except FileNotFoundError:
        return None


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LOG_THREAD = re.compile(r" \[([^\]]+)\] ")


def retry_gaps(stderr: str) -> tuple[int, int, list[float]]:
    """From the archiver's log: first-attempt warnings, warnings of any later attempt, and the
    seconds between each first-attempt warning and the same writer thread's next line (the
    pause before attempt 2)."""
    by_thread: dict[str, list[str]] = {}
    for line in stderr.splitlines():
        thread = LOG_THREAD.search(line)
        if LOG_TIME.match(line) and thread and thread.group(1).startswith("archive-writer"):
            by_thread.setdefault(thread.group(1), []).append(line)
    first = later = 0
    gaps = []
    for lines in by_thread.values():
        for i, line in enumerate(lines):
            if "Database error while" not in line:
                continue
            if "(attempt 1 of 2)" in line:
                first += 1
                if i + 1 < len(lines):
                    gaps.append(round(_log_time(lines[i + 1]) - _log_time(line), 3))
            else:
                later += 1
    return first, later, gaps


def _log_time(line: str) -> float:
    match = LOG_TIME.match(line)
    assert match is not None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    trials: int = 0
    total: Tally = field(default_factory=Tally)
    midway_lost: int = 0  # messages in neither store right after the disturbance
    leftover_keys: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.facts[key] = self.facts.get(key, 0) + n

    def problem(self, message: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(message)

    @property
    def ok(self) -> bool:
        return self.total.clean and not self.midway_lost and not self.leftover_keys and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "trials": self.trials, "messages_at_stake": self.total.messages,
            "lost": self.total.lost + self.midway_lost, "lost_after_clean_run": self.total.lost,
            "lost_midway": self.midway_lost, "duplicated": self.total.duplicated, "unexpected": self.total.unexpected,
            "misordered": self.total.misordered, "leftover_keys": self.leftover_keys, "ok": self.ok,
            "facts": self.facts, "problems": self.problems, "examples": self.total.examples,
        }


def finish_trial(result: Result, target: Target, backlog: Backlog, *, expect_healthy: bool = True) -> Run:
    """After the disturbance: the promise holds right now, then one clean run archives
    everything exactly once and leaves nothing of it in Redis."""
    client = target.client()
    midway = compare(backlog, archived_rows(target.db_url), in_redis=still_in_redis(client, backlog))
    result.midway_lost += midway.lost
    result.total.examples = (result.total.examples + [f"midway: {e}" for e in midway.examples if "neither" in e])[:10]
    if midway.duplicated or midway.unexpected:
        result.problem(f"right after the disturbance: {midway.duplicated} duplicated, {midway.unexpected} unexpected rows")
    left = expire_lock(client)
    if left is not None:
        result.count("locks_left_by_disturbed_runs")
    clean = archive_once(target)
    if expect_healthy and clean.returncode != 0:
        result.problem(f"the clean run exited {clean.returncode}: {clean.stderr.strip().splitlines()[-3:]}")
    if IN_PROGRESS in clean.stderr:
        result.problem("the clean run found the lock still held")
    tally = compare(backlog, archived_rows(target.db_url))
    result.total.add(tally)
    leftovers = leftover_keys(client, backlog)
    result.leftover_keys += len(leftovers)
    if leftovers:
        result.problem(f"{len(leftovers)} keys left in Redis, e.g. {leftovers[:3]}")
    if runs_left_running(target.db_url):
        result.problem("an archive_run row is still marked running after the clean run")
    result.trials += 1
    return clean


def calibrate(target: Target, rng: random.Random, conversations: int, real: int) -> tuple[float, Run]:
    """How long an empty run takes (start-up) and one undisturbed run over such a backlog
    (also a check of the harness itself)."""
    target.reset()
    startup = archive_once(target).seconds
    backlog = seed_backlog(target, rng, conversations, real)
    run = archive_once(target)
    tally = compare(backlog, archived_rows(target.db_url))
    if run.returncode != 0 or not tally.clean:
        raise SystemExit(f"an undisturbed run is not clean: exit {run.returncode}, {tally.as_dict()}\n{run.stderr[-2000:]}")
    return startup, run


BATCH_LINE = re.compile(r" Batch of (\d+) keys \([^)]*\): .* in (-?[\d.]+)s$", re.MULTILINE)


def seconds_per_key(run: Run) -> float:
    """What a batch took per key, from the run's own log lines. (The difference between a full
    run and an empty one, measured on a busy machine, can come out negative.)"""
    batches = [(int(keys), max(0.0, float(seconds))) for keys, seconds in BATCH_LINE.findall(run.stderr)]
    keys = sum(k for k, _ in batches)
    return sum(s for _, s in batches) / keys if keys else 0.0


def scenario_sigkill(target: Target, rng: random.Random, trials: int, conversations: int, real: int = 8,
                     log: Callable[[str], None] = print) -> Result:
    """SIGKILL at random moments, one to three times per trial, then one clean run."""
    result = Result("sigkill")
    startup, undisturbed = calibrate(target, rng, conversations, real)
    per_key = seconds_per_key(undisturbed)
    result.facts.update(start_up_s=round(startup, 2), undisturbed_run_s=round(undisturbed.seconds, 2))
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations, real)
        batch = rng.choice([25, 50, 200])
        client = target.client()
        for kill in range(rng.randint(1, 3)):
            left = len(still_in_redis(client, backlog))
            archiver = Archiver(target, "--batch-size", str(batch))
            if kill == 0 and trial % 2 == 0:
                killed = kill_between_commit_and_delete(target, archiver, client)
            else:
                killed = kill_at_random_progress(archiver, rng, batches=-(-left // batch), batch_s=per_key * batch)
            if killed:
                result.count("kills")
                archiver.result(killed=True)
                rows = archived_rows(target.db_url)
                present = still_in_redis(client, backlog)
                both = sum(1 for cid in present if len(rows.get(cid, [])) >= len(backlog.conversations[cid].messages))
                done = sum(1 for cid in backlog.conversations if cid not in present)
                phase = "before the first commit" if not rows else ("after the last delete" if not present else "mid-run")
                result.count(f"kills_{phase.replace(' ', '_')}")
                if both:
                    result.count("kills_with_conversations_committed_but_not_deleted")
                midway = compare(backlog, rows, in_redis=present)
                result.midway_lost += midway.lost
                result.total.examples = (result.total.examples + midway.examples)[:10]
                expire_lock(client)
                log(f"  sigkill trial {trial + 1}: killed {phase} ({done} archived, {both} in both stores)")
            else:
                run = archiver.result()
                result.count("runs_finished_before_the_kill")
                if run.returncode != 0:
                    result.problem(f"an undisturbed run exited {run.returncode}")
        finish_trial(result, target, backlog)
    return result


def kill_at_random_progress(archiver: Archiver, rng: random.Random, batches: int, batch_s: float) -> bool:
    """SIGKILL at a random moment of the work, measured by the run's own progress rather than
    by the clock (a loaded machine would move a timed kill past the run's end): once it has
    finished a random number of its batches (0 to all but one), after a random part of a
    batch's time. True if killed."""
    done = rng.randrange(max(1, batches))
    delay = rng.uniform(0, batch_s)
    deadline = time.monotonic() + 120
    while archiver.running() and time.monotonic() < deadline:
        log = archiver.log_so_far()
        if log.count(" Batch of ") >= done and (done or " Found " in log or "Completed" in log):
            break
        time.sleep(0.005)
    time.sleep(delay)
    return archiver.kill()


def kill_between_commit_and_delete(target: Target, archiver: Archiver, client: redis.Redis) -> bool:
    """SIGKILL the run in the narrow window between a batch's commit and its delete: once rows
    are committed, pause Redis writes (CLIENT PAUSE WRITE lets reads through), so the next
    batch reads, commits and then blocks on its delete script; kill it there. True if killed."""
    wait_for_rows(target, archiver)
    client.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    try:
        before = count_rows(target.db_url)
        deadline = time.monotonic() + 4
        while archiver.running() and time.monotonic() < deadline and count_rows(target.db_url) == before:
            time.sleep(0.02)
        time.sleep(0.2)
        return archiver.kill()
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


@contextmanager
def repeatedly(action: Callable[[], Any], low: float, high: float, rng: random.Random,
               at_once: bool = False) -> Iterator[dict[str, int]]:
    """Run `action` every low..high seconds in a thread until the block ends (the first time
    right away if `at_once`)."""
    stop = threading.Event()
    done = {"count": 0, "errors": 0}

    def loop() -> None:
        first = at_once
        while (first and not stop.is_set()) or not stop.wait(rng.uniform(low, high)):
            first = False
            try:
                done["count"] += action() or 0
            except Exception:  # noqa: BLE001 - a disturbance that fails is counted, the run goes on
                done["errors"] += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield done
    finally:
        stop.set()
        worker.join()


def wait_for_rows(target: Target, archiver: Archiver, timeout: float = 60) -> None:
    """Until the run has committed its first rows (or ended)."""
    deadline = time.monotonic() + timeout
    while archiver.running() and time.monotonic() < deadline:
        try:
            if count_rows(target.db_url):
                return
        except psycopg.Error:
            pass
        time.sleep(0.05)


def check_retries(result: Result, run: Run) -> int:
    """Count the run's retries and check them against ARCHIVER_RETRY_ATTEMPTS=2 and
    ARCHIVER_RETRY_DELAY_SECONDS=1: one retry per failed batch, a second after the failure.
    Returns the number of retries."""
    first, later, gaps = retry_gaps(run.stderr)
    result.count("retries", first)
    result.count("conversations_failed_after_retry", run.stderr.count("after retry, skipping"))
    if later:
        result.problem(f"{later} warnings of a third attempt: the retry setting says 2 attempts")
    if gaps and min(gaps) < 0.95:
        result.problem(f"a retry came {min(gaps)} s after the failure; 1 s was configured")
    result.facts.setdefault("retry_pause_s", []).extend(gaps[:5])
    return first


def check_unhealthy_run(result: Result, target: Target, run: Run, *, hit: bool) -> None:
    """A run that met an outage says so: exit 1, an unhealthy health file; and no traceback."""
    document = health(target)
    status = document and document.get("status")
    result.count(f"disturbed_runs_exit_{run.returncode}")
    if run.returncode not in (0, 1):
        result.problem(f"a disturbed run exited {run.returncode}: {run.stderr.strip().splitlines()[-3:]}")
    if run.returncode == 1 and status != "unhealthy":
        result.problem(f"exit 1 but the health file says {status!r}")
    if run.returncode == 0 and status != "healthy":
        result.problem(f"exit 0 but the health file says {status!r}")
    if hit and run.returncode == 0 and ("Failed to archive" in run.stderr or "Redis connection failed" in run.stderr):
        result.problem("a run that failed to archive something exited 0")
    if "Traceback" in run.stderr and "Archival run failed" not in run.stderr:
        result.problem("a disturbed run printed a traceback outside the run's error boundary")


def terminate_backends(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND application_name = %s",
            (database, APP_NAME),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def scenario_pg_terminate(target: Target, rng: random.Random, trials: int, conversations: int, admin_url: str,
                          database: str, every: tuple[float, float] = (0.05, 0.6),
                          log: Callable[[str], None] = print) -> Result:
    """The archiver's PostgreSQL connections are terminated every `every` seconds (0.05-0.6 s) during a run."""
    result = Result("pg-terminate")
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations)
        archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
        wait_for_rows(target, archiver)
        # At once: the run has committed its first rows, and a fast one may be done in less
        # than the first pause.
        with repeatedly(lambda: terminate_backends(admin_url, database), *every, rng, at_once=True) as done:
            run = archiver.wait()
        result.count("connections_terminated", done["count"])
        result.count("trials_disturbed_mid_run", int(done["count"] > 0))
        first = check_retries(result, run)
        check_unhealthy_run(result, target, run, hit=done["count"] > 0)
        log(f"  pg-terminate trial {trial + 1}: {done['count']} connections terminated, {first} retries, exit {run.returncode}")
        finish_trial(result, target, backlog)
    result.facts["retry_pause_s"] = sorted(result.facts.get("retry_pause_s", []))[:10]
    return result


def pg_cluster(action: str) -> subprocess.CompletedProcess[str]:
    commands = {
        "create": ["pg_createcluster", PG_VERSION, PG_CLUSTER, "-p", str(PG_CLUSTER_PORT), "--", "--auth=trust"],
        "start": ["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"],
        "stop": ["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop", "-m", "immediate"],
        "drop": ["pg_dropcluster", PG_VERSION, PG_CLUSTER, "--stop"],
    }
    return subprocess.run(commands[action], capture_output=True, text=True, timeout=120)


def wait_for_pg(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def scenario_pg_restart(redis_url: str, health_file: Path, rng: random.Random, trials: int, conversations: int,
                        log: Callable[[str], None] = print) -> Result:
    """A real PostgreSQL server (a throwaway cluster) stops mid-run (-m immediate: as in a
    crash) and starts again 1-4 s later."""
    result = Result("pg-restart")
    if shutil.which("pg_createcluster") is None:
        result.facts["not_run"] = "pg_createcluster is not installed"
        return result
    created = pg_cluster("create")
    if created.returncode != 0 and "already exists" not in created.stderr:
        result.facts["not_run"] = f"pg_createcluster failed: {created.stderr.strip()[:300]}"
        return result
    try:
        pg_cluster("start")
        admin = f"postgresql://postgres@127.0.0.1:{PG_CLUSTER_PORT}/postgres"
        wait_for_pg(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        db_url = f"postgresql://postgres@127.0.0.1:{PG_CLUSTER_PORT}/{DB_NAME}"
        migrate(db_url)
        target = Target(db_url, redis_url, health_file)
        for trial in range(trials):
            target.reset()
            backlog = seed_backlog(target, rng, conversations)
            archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
            wait_for_rows(target, archiver)
            time.sleep(rng.uniform(0, 0.2))  # the stop itself takes a few tenths of a second
            stopped = pg_cluster("stop").returncode == 0 and archiver.running()
            down = rng.uniform(1, 4)
            time.sleep(down)
            pg_cluster("start")
            run = archiver.wait()
            wait_for_pg(db_url)
            # Met the stop: a database error in the run's own log. A process still running when
            # the server stopped may have been past its last database write (exiting).
            met = stopped and ("Database error" in run.stderr or "Cannot record the run" in run.stderr)
            result.count("server_stops_mid_run", int(stopped))
            result.count("runs_that_met_the_stop", int(met))
            first = check_retries(result, run)
            check_unhealthy_run(result, target, run, hit=met)  # a run that failed to archive exits 1
            if run.returncode == 0 and (left := still_in_redis(target.client(), backlog)):
                result.problem(f"the run exited 0 but left {len(left)} conversations in Redis")
            log(f"  pg-restart trial {trial + 1}: down {down:.1f} s, {first} retries, exit {run.returncode}")
            finish_trial(result, target, backlog)
        result.facts["retry_pause_s"] = sorted(result.facts.get("retry_pause_s", []))[:10]
    finally:
        pg_cluster("drop")
    return result


def kill_redis_clients(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url, protocol=2)
    try:
        return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    finally:
        client.close()


def scenario_redis_kill(target: Target, rng: random.Random, trials: int, conversations: int,
                        every: tuple[float, float] = (0.02, 0.4), log: Callable[[str], None] = print) -> Result:
    """Redis drops every client connection, again and again, while a run is certainly under
    way: the run is held at its first insert (held_rows), Redis writes are paused (reads go on),
    then the run is let go, so that its deletes wait on Redis while the connections are killed
    every `every` seconds (0.02-0.4 s); writes resume when the run has ended."""
    result = Result("redis-kill")
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations)
        client = target.client()
        with held_rows(target.db_url, backlog) as gate:
            archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
            held = wait_for_lock_wait(target.db_url, archiver)
            client.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
            gate.rollback()
        try:
            with repeatedly(lambda: kill_redis_clients(target.redis_url), *every, rng, at_once=True) as done:
                run = archiver.wait()
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        if not held:
            result.problem("the run was not held at its first insert: it ended first")
        result.count("connections_killed", done["count"])
        result.count("trials_disturbed_mid_run", int(held and done["count"] > 0))
        check_unhealthy_run(result, target, run, hit=done["count"] > 0)
        if run.returncode == 1 and "Redis connection failed" not in run.stderr:
            result.problem("an unhealthy run after Redis dropped it does not say so")
        log(f"  redis-kill trial {trial + 1}: {done['count']} connections killed, exit {run.returncode}")
        finish_trial(result, target, backlog)
    return result


@contextmanager
def held_rows(db_url: str, backlog: Backlog) -> Iterator[psycopg.Connection]:
    """An open transaction that has inserted, without committing, the first message of every
    conversation of the backlog whose first message has an id: an archiver that inserts one of
    them waits (a unique index waits for the transaction holding the same key) until the
    transaction ends. Rolled back at the end of the block, if not before."""
    conn = psycopg.connect(db_url)
    try:
        now = datetime.now(timezone.utc)
        rows = [(s.conversation_id, f"id:{s.messages[0].id}") for s in backlog.conversations.values() if s.messages and s.messages[0].id]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO conversation_history (conversation_id, message_key, timestamp, role, content, position, metadata, "
                "source, thread_id, checkpoint_ns, checkpoint_id, archived_at, fingerprint) "
                "VALUES (%s, %s, %s, 'human', '', 0, '{}', 'plain', '', '', '', %s, '')",
                [(cid, key, now, now) for cid, key in rows],
            )
        yield conn
    finally:
        conn.rollback()
        conn.close()


def wait_for_lock_wait(db_url: str, archiver: Archiver, timeout: float = 120) -> bool:
    """Until the archiver's database session waits on a lock held by another transaction; False
    if the run ended (or the time ran out) first."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while archiver.running() and time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'", (APP_NAME,)
            ).fetchone()[0]
            if waiting:
                return True
            time.sleep(0.02)
    return False


def scenario_redis_restart(target: Target, port: int, rng: random.Random, trials: int, conversations: int,
                           log: Callable[[str], None] = print) -> Result:
    """The Redis server shuts down mid-run (SHUTDOWN SAVE: its data survives, as with
    persistence on) and starts again 1-3 s later."""
    result = Result("redis-restart")
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations)
        archiver = Archiver(target, "--batch-size", str(rng.choice([25, 50])))
        wait_for_rows(target, archiver)
        time.sleep(rng.uniform(0, 0.5))
        shutdown = archiver.running()
        try:
            target.client().execute_command("SHUTDOWN", "SAVE")
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        time.sleep(rng.uniform(1, 3))
        start_redis(port)
        run = archiver.wait()
        result.count("server_stops_mid_run", int(shutdown))
        check_unhealthy_run(result, target, run, hit=shutdown)
        if shutdown and run.returncode == 0:
            # A run with no command in flight while Redis was down meets no error: redis-py
            # makes a new connection when an idle one is next used. Every command the archiver
            # sends can be repeated anyway (reads, and a compare-and-delete that answers -1 the
            # second time); check_unhealthy_run has checked that such a run is consistent.
            result.count("runs_that_rode_through_the_restart")
        log(f"  redis-restart trial {trial + 1}: exit {run.returncode}")
        finish_trial(result, target, backlog)
    return result


def scenario_concurrent(target: Target, rng: random.Random, trials: int, conversations: int,
                        log: Callable[[str], None] = print) -> Result:
    """Two, then three archivers started at the same moment."""
    result = Result("concurrent")
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations)
        n = 2 + trial % 2
        archivers = [Archiver(target, "--batch-size", "50") for _ in range(n)]
        runs = [a.wait() for a in archivers]
        workers = [r for r in runs if r.summary.startswith("Archived ")]
        waiting = [r for r in runs if IN_PROGRESS in r.stderr]
        result.count(f"trials_with_{n}_archivers")
        if len(workers) != 1 or len(waiting) != n - 1:
            result.problem(f"{n} archivers: {len(workers)} worked, {len(waiting)} said another run is in progress")
        if any(r.returncode != 0 for r in runs):
            result.problem(f"exit codes {[r.returncode for r in runs]}")
        with psycopg.connect(target.db_url) as conn:
            recorded = conn.execute("SELECT COUNT(*) FROM archive_run").fetchone()[0]
        if recorded != 1:
            result.problem(f"{recorded} archive_run rows for one working run")
        log(f"  concurrent trial {trial + 1}: {n} archivers, exits {[r.returncode for r in runs]}")
        finish_trial(result, target, backlog)
    return result


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
        from harness import lgwriter

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


def scenario_writer(target: Target, rng: random.Random, trials: int, threads: int, seconds: float,
                    log: Callable[[str], None] = print) -> Result:
    """The bot keeps writing (real savers, every kind) while the archiver runs again and
    again with a cutoff of 0.36 s, so threads are archived between and during turns. When the
    writers stop, one more run; the archive must equal everything the writers were told the
    conversation holds (LangGraph's get_state after each turn), and Redis must be empty."""
    from harness import lgwriter

    result = Result("writer")
    for trial in range(trials):
        target.reset()
        names = [f"live:{lgwriter.SAVERS[i % 4]}:{trial}:{i}" for i in range(threads)]
        bot = Bot(target.redis_url, names)
        writers = [threading.Thread(target=bot.write, args=(names[i::2], rng.getrandbits(32))) for i in range(2)]
        for w in writers:
            w.start()
        deadline = time.monotonic() + seconds
        runs = []
        while time.monotonic() < deadline:
            runs.append(archive_once(target, "--cutoff-hours", "0.0001", "--batch-size", "4"))
        bot.stop.set()
        for w in writers:
            w.join()
        final_states = {name: lgwriter.conversation_state(target.redis_url, name, saver=name.split(":")[1])["messages"] for name in names}
        time.sleep(0.5)  # every thread past the 0.36 s cutoff
        archive_once(target, "--cutoff-hours", "0.0001")
        backlog = Backlog({name: Seeded(name, "writer", "", msgs) for name, msgs in bot.expected.items()})
        rows = archived_rows(target.db_url)
        tally = compare(backlog, rows)
        result.total.add(tally)
        for name, state in final_states.items():
            got = [m.identity() for m in rows.get(name, [])]
            tail = [Msg(m["id"], m["type"], m["content"]).identity() for m in state]
            if tail and got[-len(tail):] != tail:
                result.problem(f"{name}: the archive does not end with LangGraph's final get_state")
        left = sorted(k.decode("utf-8", "replace") for k in target.client().scan_iter(count=1000))
        result.leftover_keys += len(left)
        if left:
            result.problem(f"{len(left)} keys left after the final run, e.g. {left[:3]}")
        for error in bot.errors[:5]:
            result.problem(f"writer error: {error[:300]}")
        deferred = sum(int(m.group(1)) for r in runs for m in re.finditer(r"; (\d+) deferred", r.summary))
        archived = sum(int(m.group(1)) for r in runs for m in re.finditer(r"^Archived (\d+) conversations", r.summary))
        result.count("turns_written", sum(bot.turns.values()))
        result.count("archiver_runs", len(runs))
        result.count("archived_during_writes", archived)
        result.count("deferred_because_written_meanwhile", deferred)
        result.count("unhealthy_runs", sum(1 for r in runs if r.returncode != 0))
        result.trials += 1
        log(f"  writer trial {trial + 1}: {sum(bot.turns.values())} turns, {len(runs)} runs, {archived} archived, {deferred} deferred, {len(bot.errors)} writer errors")
    return result


# Hostile values: the archiver must quarantine them, run nothing, and archive the rest.


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


def scenario_hostile(target: Target, rng: random.Random, trials: int, conversations: int, marker_dir: Path,
                     log: Callable[[str], None] = print) -> Result:
    """A backlog with the hostile values mixed in (and a healthy 10 MB message): the healthy
    conversations are archived exactly once, every hostile value is quarantined once and
    kept in Redis, nothing it names is run."""
    result = Result("hostile")
    for trial in range(trials):
        target.reset()
        marker = marker_dir / f"pwned-{trial}"
        backlog = seed_backlog(target, rng, conversations)
        client = target.client()
        for name, value in hostile_values(marker):
            key = f"langgraph:checkpoint:hostile-{name}:{trial}"
            client.set(key, value)
            backlog.hostile_keys.add(key)
        big = "x" * (10 * 2**20) + " fin"
        key = f"langgraph:checkpoint:huge-{trial}:1"
        client.set(key, json.dumps({"v": 4, "ts": "2020-01-01T00:00:00+00:00", "id": "h", "channel_values": {"messages": [lc_message("human", big, f"huge-{trial}")]}}))
        backlog.add(Seeded(f"huge-{trial}", "plain", key, [Msg(f"huge-{trial}", "human", big)]))
        run = archive_once(target)
        with psycopg.connect(target.db_url) as conn:
            quarantined = Counter(k for (k,) in conn.execute("SELECT key FROM quarantined_checkpoint"))
        missing = sorted(k for k in backlog.hostile_keys if quarantined[k] != 1)
        if missing:
            result.problem(f"not quarantined exactly once: {missing}")
        if run.returncode != 1:
            result.problem(f"a run that quarantined values exited {run.returncode}")
        if "Archived " not in run.stdout + run.stderr:
            result.problem(f"the run did not complete: {run.stderr.strip().splitlines()[-3:]}")
        if marker.exists():
            result.problem("the marker file exists: stored data was executed")
        result.count("hostile_values", len(backlog.hostile_keys))
        result.count("quarantined", sum(quarantined.values()))
        log(f"  hostile trial {trial + 1}: exit {run.returncode}, {sum(quarantined.values())} quarantined of {len(backlog.hostile_keys)}")
        finish_trial(result, target, backlog, expect_healthy=False)
        with psycopg.connect(target.db_url) as conn:
            again = conn.execute("SELECT COUNT(*) FROM quarantined_checkpoint").fetchone()[0]
        if again != sum(quarantined.values()):
            result.problem("the clean run quarantined the same values again")
    return result


def scenario_disk_full(target: Target, rng: random.Random, conversations: int, log: Callable[[str], None] = print) -> Result:
    """The health file's filesystem is full (a 16 KB tmpfs, filled up): the run archives,
    says clearly that the health file could not be written, exits 1, leaves no temporary file."""
    result = Result("disk-full")
    mount = Path(tempfile.mkdtemp(prefix="relia-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        result.facts["not_run"] = f"cannot mount a tmpfs: {mounted.stderr.strip()[:200]}"
        mount.rmdir()
        return result
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 1024)
            except OSError:
                pass
        full = Target(target.db_url, target.redis_url, mount / "archiver_health.json")
        full.reset()
        backlog = seed_backlog(full, rng, conversations)
        run = archive_once(full)
        if run.returncode != 1:
            result.problem(f"exit {run.returncode} with a full disk for the health file")
        if "Cannot write the health file" not in run.stderr or "No space left on device" not in run.stderr:
            result.problem(f"no clear message about the health file: {run.stderr.strip().splitlines()[-2:]}")
        if [p.name for p in mount.iterdir() if p.name != "filler"]:
            result.problem(f"files left on the full disk: {[p.name for p in mount.iterdir()]}")
        tally = compare(backlog, archived_rows(full.db_url))
        result.total.add(tally)
        leftovers = leftover_keys(full.client(), backlog)
        result.leftover_keys += len(leftovers)
        result.trials = 1
        log(f"  disk-full: exit {run.returncode}, {run.stderr.strip().splitlines()[-1][:160]}")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        mount.rmdir()
    return result


# --- set-up and report ----------------------------------------------------------------------


def migrate(db_url: str) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "archive_site.settings"})


def fresh_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    return url


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    with psycopg.connect(PG_ADMIN_URL) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "postgresql": pg, "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


ALL = ("sigkill", "pg-terminate", "pg-restart", "redis-kill", "redis-restart", "writer", "concurrent", "hostile", "disk-full")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="SIGKILL trials (default 30)")
    parser.add_argument("--chaos-trials", type=int, default=None, help="trials of each other scenario (default: a third of --trials, at least 2)")
    parser.add_argument("--conversations", type=int, default=3000, help="conversations per backlog (default 3000)")
    parser.add_argument("--writer-seconds", type=float, default=None, help="how long the bot writes per writer trial (default 20, 5 when small)")
    parser.add_argument("--scenarios", default=",".join(ALL), help=f"comma-separated, from: {', '.join(ALL)}")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reliability.json")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in ALL]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(ALL)}")
    chaos = args.chaos_trials or max(2, math.ceil(args.trials / 3))
    writer_seconds = args.writer_seconds or (20.0 if args.conversations >= 1000 else 5.0)
    rng = random.Random(args.seed)

    began = time.monotonic()
    redis_started = start_redis(REDIS_PORT)
    db_url = fresh_database(PG_ADMIN_URL, DB_NAME)
    redis_url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    work = Path(tempfile.mkdtemp(prefix="relia-"))
    target = Target(db_url, redis_url, work / "archiver_health.json")
    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/reliability.py", *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "size": {"sigkill_trials": args.trials, "other_trials": chaos, "conversations": args.conversations},
        "scenarios": [],
    }
    runners: dict[str, Callable[[], Result]] = {
        "sigkill": lambda: scenario_sigkill(target, rng, args.trials, args.conversations),
        "pg-terminate": lambda: scenario_pg_terminate(target, rng, chaos, args.conversations, PG_ADMIN_URL, DB_NAME),
        "pg-restart": lambda: scenario_pg_restart(redis_url, target.health_file, rng, chaos, args.conversations),
        "redis-kill": lambda: scenario_redis_kill(target, rng, chaos, args.conversations),
        "redis-restart": lambda: scenario_redis_restart(target, REDIS_PORT, rng, chaos, args.conversations),
        "writer": lambda: scenario_writer(target, rng, chaos, 8, writer_seconds),
        "concurrent": lambda: scenario_concurrent(target, rng, chaos, args.conversations),
        "hostile": lambda: scenario_hostile(target, rng, chaos, args.conversations, work),
        "disk-full": lambda: scenario_disk_full(target, rng, args.conversations),
    }
    ok = True
    try:
        for name in chosen:
            print(f"{name} ...", flush=True)
            t0 = time.monotonic()
            result = runners[name]().as_dict()
            result["seconds"] = round(time.monotonic() - t0, 1)
            report["scenarios"].append(result)
            ok = ok and (result["ok"] or "not_run" in result["facts"])
            print(f"{name}: {json.dumps({k: result[k] for k in ('trials', 'messages_at_stake', 'lost', 'duplicated', 'leftover_keys', 'ok')})}", flush=True)
            for problem in result["problems"]:
                print(f"  PROBLEM: {problem}", flush=True)
    finally:
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report["seconds"] = round(time.monotonic() - began, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
        if redis_started:
            stop_redis(REDIS_PORT)
    print_table(report["scenarios"])
    print(f"figures written to {args.out} ({report['seconds']} s)")
    return 0 if ok else 1


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'scenario':<14} {'trials':>6} {'messages':>10} {'lost':>6} {'duplicated':>10} {'left in Redis':>13}  ok")
    for r in results:
        note = "" if "not_run" not in r["facts"] else f"  (not run: {r['facts']['not_run']})"
        print(f"{r['scenario']:<14} {r['trials']:>6} {r['messages_at_stake']:>10} {r['lost']:>6} {r['duplicated']:>10} {r['leftover_keys']:>13}  {r['ok']}{note}")


if __name__ == "__main__":
    sys.exit(main())
