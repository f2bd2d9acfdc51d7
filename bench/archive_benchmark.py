#!/usr/bin/env python
"""Archive throughput and memory, side by side with this machine's limit, in one run.

    python bench/archive_benchmark.py --messages 400000
    python bench/archive_benchmark.py --memory 100000,1000000
    python bench/archive_benchmark.py --messages 2000 --naive-sample 200   (CI: keeps it working)
    python bench/archive_benchmark.py --messages 500 --turns 200 --naive-sample 0   (long conversations)

For each backlog size it:
1. seeds conversations of 5 to 50 messages (realistic lengths, some non-ASCII) into a Redis
   with the JSON and search modules: half as langgraph-checkpoint-redis checkpoints (a
   chain of checkpoints per thread, one per turn, each holding the messages so far, with a
   latest pointer, as RedisSaver writes them), half as the operations guide's plain strings;
   with --turns, --messages conversations of that many turns, three checkpoints a turn;
2. measures the limit: pipelined reads of the same documents (SCAN + GET / JSON.GET, 200 a
   pipeline), plus COPY of the same rows into a table with conversation_history's indexes;
   and the limit with history: that plus the message ids of every older checkpoint, the
   least the whole conversation takes to read;
3. runs the real `manage.py archive_checkpoints` as its own process: wall time, messages per
   second, peak RSS (from wait4), then checks that every message arrived and no key is left;
4. measures a naive worker on a sample: one ORM save() per message and one transaction
   per conversation, as a straightforward worker would do.
It prints a table and writes the figures as JSON (bench/results/ by default).

It uses its own database (bench_archive, dropped and created) and its own Redis server
(port 6394, started with scripts/start-redis-stack.sh), so it disturbs nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.documents import checkpoint  # noqa: E402
from harness.servers import redis_server  # noqa: E402

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("BENCH_DB_NAME", "bench_archive")
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6394"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
PIPELINE = 200

WORDS = (
    "pedido envío factura devolución cita mañana tarde gracias hola cuándo dónde precio "
    "talla color tienda Málaga Córdoba A Coruña número referencia cambio tarjeta pago "
    "order delivery refund 注文 配送 😊 🙏 ✅ ñandú «urgente» \"ok\" reserva peluquería corte"
).split()


def database_url(name: str = DB_NAME) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


# --- seeding ------------------------------------------------------------------------------


def text(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words) + ("\n" + " ".join(rng.choice(WORDS) for _ in range(5)) if rng.random() < 0.2 else "")


def lc(role: str, content: str, mid: str) -> dict[str, Any]:
    name = {"human": "HumanMessage", "ai": "AIMessage"}[role]
    kwargs: dict[str, Any] = {"content": content, "type": role, "id": mid}
    if role == "ai":
        kwargs.update(tool_calls=[], invalid_tool_calls=[], response_metadata={"finish_reason": "stop"})
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", name], "kwargs": kwargs}


def conversation(rng: random.Random, size: int) -> list[dict[str, Any]]:
    messages = []
    for i in range(size):
        role = "human" if i % 2 == 0 else "ai"
        body = text(rng, 3, 25) if role == "human" else text(rng, 15, 90)
        messages.append(lc(role, body, f"{'h' if role == 'human' else 'run'}-{uuid.UUID(int=rng.getrandbits(128))}"))
    return messages


def checkpoint_id(ts: datetime, rng: random.Random) -> str:
    """An id shaped like LangGraph's (uuid6): its text sorts by creation time, which the
    archiver relies on, as LangGraph does."""
    ticks = f"{int(ts.timestamp() * 10_000_000):015x}"[-15:]
    tail = f"{rng.getrandbits(64):016x}"
    return f"{ticks[:8]}-{ticks[8:12]}-6{ticks[12:]}-{tail[:4]}-{tail[4:]}"


def seed(client: redis.Redis, messages_wanted: int, rng: random.Random) -> tuple[int, int, list[tuple[Any, ...]]]:
    """Seed about `messages_wanted` messages; return (conversations, messages, expected rows)."""
    now = datetime.now(timezone.utc)
    rows: list[tuple[Any, ...]] = []
    total = conversations = 0
    pipe = client.pipeline(transaction=False)
    while total < messages_wanted:
        size = min(rng.randint(5, 50), max(1, messages_wanted - total))
        messages = conversation(rng, size)
        customer = f"cust-{rng.randint(1, 50_000)}" if rng.random() < 0.9 else None
        start = now - timedelta(hours=30) + timedelta(seconds=rng.randint(0, 3600))
        thread = f"wa:346{rng.randint(10**7, 10**8 - 1)}:{conversations}"
        if conversations % 2 == 0:
            parent = ""
            for turn_end in range(2, size + 2, 2):
                held = messages[: min(turn_end, size)]
                ts = start + timedelta(minutes=turn_end)
                cid = checkpoint_id(ts, rng)
                pipe.execute_command("JSON.SET", f"checkpoint:{thread}:__empty__:{cid}", "$", json.dumps(checkpoint(thread, cid, parent, ts, held, customer), ensure_ascii=False))
                parent = cid
            pipe.set(f"checkpoint_latest:{thread}:__empty__", f"checkpoint:{thread}:__empty__:{parent}")
        else:
            value = {"v": 4, "ts": (start + timedelta(minutes=size)).isoformat(), "id": str(uuid.uuid4()),
                     "channel_values": {"messages": messages, "conversation_id": thread, "customer_id": customer}}
            pipe.set(f"langgraph:checkpoint:{thread}:1698765432", json.dumps(value, ensure_ascii=False))
        for position, message in enumerate(messages):
            kwargs = message["kwargs"]
            rows.append((thread, customer, start, kwargs["type"], kwargs["content"], kwargs["id"], position, "id:" + kwargs["id"], thread, now))
        total += size
        conversations += 1
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()
    return conversations, total, rows


def seed_long(client: redis.Redis, conversations: int, turns: int, rng: random.Random) -> tuple[int, int, list[tuple[Any, ...]]]:
    """`conversations` RedisSaver threads of `turns` turns each, written as LangGraph writes a
    turn: an input checkpoint (the user's text, without an id, under __start__), then one
    after the user's message is applied, then one after the bot's answer: three checkpoints
    per turn, every one of them holding the whole conversation so far."""
    now = datetime.now(timezone.utc)
    rows: list[tuple[Any, ...]] = []
    total = 0
    pipe = client.pipeline(transaction=False)
    for n in range(conversations):
        messages = conversation(rng, 2 * turns)
        customer = f"cust-{rng.randint(1, 50_000)}"
        start = now - timedelta(hours=30)
        thread = f"wa:long:{n}"
        parent = ""
        step = 0
        for turn in range(turns):
            for held, pending in ((2 * turn, True), (2 * turn + 1, False), (2 * turn + 2, False)):
                step += 1
                ts = start + timedelta(seconds=step)
                cid = checkpoint_id(ts, rng)
                doc = checkpoint(thread, cid, parent, ts, messages[:held], customer)
                if pending:
                    human = {**messages[held], "kwargs": {k: v for k, v in messages[held]["kwargs"].items() if k != "id"}}
                    doc["checkpoint"]["channel_values"]["__start__"] = {"messages": [human]}
                    doc["checkpoint"]["channel_versions"]["__start__"] = f"{step:032d}.0.1"
                pipe.execute_command("JSON.SET", f"checkpoint:{thread}:__empty__:{cid}", "$", json.dumps(doc, ensure_ascii=False))
                parent = cid
                if len(pipe) >= 200:
                    pipe.execute()
        pipe.set(f"checkpoint_latest:{thread}:__empty__", f"checkpoint:{thread}:__empty__:{parent}")
        for position, message in enumerate(messages):
            kwargs = message["kwargs"]
            rows.append((thread, customer, start, kwargs["type"], kwargs["content"], kwargs["id"], position, "id:" + kwargs["id"], thread, now))
        total += len(messages)
    pipe.execute()
    return conversations, total, rows


def ensure_index(client: redis.Redis) -> None:
    """The search indexes RedisSaver.setup() creates, which the archiver's delete uses."""
    existing = {i.decode() for i in client.execute_command("FT._LIST")}
    if "checkpoint" not in existing:
        client.execute_command(
            "FT.CREATE", "checkpoint", "ON", "JSON", "PREFIX", "1", "checkpoint:", "SCHEMA",
            "$.thread_id", "AS", "thread_id", "TAG", "$.checkpoint_ns", "AS", "checkpoint_ns", "TAG",
            "$.checkpoint_id", "AS", "checkpoint_id", "TAG", "$.checkpoint_ts", "AS", "checkpoint_ts", "NUMERIC",
        )
    if "checkpoint_write" not in existing:
        client.execute_command(
            "FT.CREATE", "checkpoint_write", "ON", "JSON", "PREFIX", "1", "checkpoint_write:", "SCHEMA",
            "$.thread_id", "AS", "thread_id", "TAG", "$.checkpoint_ns", "AS", "checkpoint_ns", "TAG",
            "$.checkpoint_id", "AS", "checkpoint_id", "TAG",
        )


# --- the limit ----------------------------------------------------------------------------


def limit_read(client: redis.Redis) -> float:
    """Pipelined reads of every document the archiver needs: the plain strings, and for each
    saver thread its pointer and then its newest checkpoint."""
    began = time.perf_counter()
    for pattern in ("langgraph:checkpoint:*",):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), PIPELINE):
            pipe = client.pipeline(transaction=False)
            for key in keys[i : i + PIPELINE]:
                pipe.get(key)
            pipe.execute()
    pointers = list(client.scan_iter(match="checkpoint_latest:*", count=1000))
    for i in range(0, len(pointers), PIPELINE):
        pipe = client.pipeline(transaction=False)
        for key in pointers[i : i + PIPELINE]:
            pipe.get(key)
        targets = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for target in targets:
            pipe.execute_command("JSON.GET", target)
        pipe.execute()
    return time.perf_counter() - began


def limit_history_read(client: redis.Redis) -> float:
    """What reading the whole conversation adds, at the least: the time and message ids of
    every checkpoint of each saver thread other than its newest (RedisJSON paths), 200 a pipeline."""
    began = time.perf_counter()
    newest = set()
    for i, pointer in enumerate(client.scan_iter(match="checkpoint_latest:*", count=1000)):
        newest.add(client.get(pointer))
    batch: list[bytes] = []
    for key in client.scan_iter(match="checkpoint:*", count=1000):
        if key in newest:
            continue
        batch.append(key)
        if len(batch) >= PIPELINE:
            _read_ids(client, batch)
            batch = []
    _read_ids(client, batch)
    return time.perf_counter() - began


def _read_ids(client: redis.Redis, keys: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("JSON.GET", key, "$.checkpoint.ts", "$.checkpoint.channel_values.messages[*].kwargs.id")
    pipe.execute()


def limit_copy(rows: list[tuple[Any, ...]]) -> float:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS limit_copy")
        conn.execute("CREATE TABLE limit_copy (LIKE conversation_history INCLUDING ALL)")
        began = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            "COPY limit_copy (conversation_id, customer_id, timestamp, role, content, message_id, position, message_key, thread_id, archived_at, "
            "source, checkpoint_ns, checkpoint_id, metadata, fingerprint) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row((*r, "plain", "", "", "{}", "0" * 40))  # a fingerprint as wide as the archiver's
        elapsed = time.perf_counter() - began
        conn.execute("DROP TABLE limit_copy")
    return elapsed


# --- the archiver and the naive worker ----------------------------------------------------


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run a process; return its wall time, its peak RSS in MB and its last output line.

    The peak is the child's own VmHWM, sampled until it exits: wait4's ru_maxrss would also
    count the pages it inherited from this (large) process when it was forked."""
    peak = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err)
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
                peak = max(peak, int(hwm.split()[1]) // 1024)
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(0.02)
        elapsed = time.perf_counter() - began
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{stdout}\n{stderr[-3000:]}")
    return elapsed, peak, stdout.strip().splitlines()[-1] if stdout.strip() else ""


def django_env(health: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "ARCHIVER_HEALTH_FILE": str(health),
        "DJANGO_SETTINGS_MODULE": "archive_site.settings",
        "LOG_LEVEL": "WARNING",
    }


def naive_worker() -> None:
    """One ORM save() per message, one transaction per conversation (run as its own process)."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import transaction

    from conversations.models import ConversationHistory

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    now = datetime.now(timezone.utc)
    for key in client.scan_iter(match="langgraph:checkpoint:*", count=1000):
        value = json.loads(client.get(key))
        state = value["channel_values"]
        with transaction.atomic():
            for position, message in enumerate(state["messages"]):
                kwargs = message["kwargs"]
                ConversationHistory(
                    conversation_id=state["conversation_id"], customer_id=state.get("customer_id"), timestamp=value["ts"],
                    role=kwargs["type"], content=kwargs["content"], message_id=kwargs["id"], position=position,
                    message_key="id:" + kwargs["id"], source="plain", thread_id=state["conversation_id"], archived_at=now,
                ).save()
        client.delete(key)


# --- orchestration ------------------------------------------------------------------------


def fresh_database() -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url()}, check=True)


def count_rows() -> int:
    with psycopg.connect(database_url()) as conn:
        return conn.execute("SELECT COUNT(*) FROM conversation_history").fetchone()[0]


def measure(size: int, naive_sample: int, seed_value: int, health: Path, turns: int = 0) -> dict[str, Any]:
    """One backlog: `size` messages of mixed conversations, or, with `turns`, `size`
    conversations of that many turns each (seed_long)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    ensure_index(client)
    fresh_database()
    rng = random.Random(seed_value)
    began = time.perf_counter()
    conversations, messages, rows = seed_long(client, size, turns, rng) if turns else seed(client, size, rng)
    seeding = time.perf_counter() - began
    used = client.info("memory")["used_memory"] // 2**20
    checkpoints = sum(1 for _ in client.scan_iter(match="checkpoint:*", count=1000))

    read_s = limit_read(client)
    history_s = limit_history_read(client)
    copy_s = limit_copy(rows)
    del rows
    archive_s, rss_mb, summary = run_measured([sys.executable, "manage.py", "archive_checkpoints"], django_env(health))
    archived = count_rows()
    left = sum(1 for _ in client.scan_iter(match="*checkpoint*", count=1000))
    if archived != messages or left:
        raise SystemExit(f"archive incomplete: {archived} of {messages} rows, {left} checkpoint keys left")

    result: dict[str, Any] = {
        "backlog_messages": messages,
        "conversations": conversations,
        "turns": turns or None,
        "saver_checkpoints": checkpoints,
        "redis_used_mb": used,
        "seed_s": round(seeding, 2),
        "limit_read_s": round(read_s, 3),
        "limit_history_read_s": round(history_s, 3),
        "limit_copy_s": round(copy_s, 3),
        "limit_msgs_per_s": round(messages / (read_s + copy_s)),
        "limit_with_history_msgs_per_s": round(messages / (read_s + history_s + copy_s)),
        "archive_s": round(archive_s, 3),
        "archive_msgs_per_s": round(messages / archive_s),
        "archive_peak_rss_mb": rss_mb,
        "archive_summary": summary,
    }
    result["ratio_to_limit"] = round(result["archive_msgs_per_s"] / result["limit_msgs_per_s"], 3)
    result["ratio_to_limit_with_history"] = round(result["archive_msgs_per_s"] / result["limit_with_history_msgs_per_s"], 3)

    if naive_sample:
        client.flushdb()
        ensure_index(client)
        fresh_database()
        _, sample, _ = seed_plain_only(client, naive_sample, random.Random(seed_value + 1))
        naive_s, naive_rss, _ = run_measured([sys.executable, __file__, "--naive-worker"], django_env(health))
        result.update(naive_messages=sample, naive_s=round(naive_s, 3), naive_msgs_per_s=round(sample / naive_s), naive_peak_rss_mb=naive_rss)
    client.flushdb()
    return result


def seed_plain_only(client: redis.Redis, messages_wanted: int, rng: random.Random) -> tuple[int, int, list[Any]]:
    """The naive worker reads the plain layout only: seed just that."""
    now = datetime.now(timezone.utc)
    total = conversations = 0
    pipe = client.pipeline(transaction=False)
    while total < messages_wanted:
        size = min(rng.randint(5, 50), messages_wanted - total)
        thread = f"naive-{conversations}"
        value = {"v": 4, "ts": (now - timedelta(hours=30)).isoformat(), "id": str(uuid.uuid4()),
                 "channel_values": {"messages": conversation(rng, size), "conversation_id": thread, "customer_id": "cust-1"}}
        pipe.set(f"langgraph:checkpoint:{thread}:1", json.dumps(value, ensure_ascii=False))
        total += size
        conversations += 1
    pipe.execute()
    return conversations, total, []


def machine() -> dict[str, Any]:
    with psycopg.connect(PG_ADMIN_URL) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(), "postgresql": pg,
        "redis": redis.Redis.from_url(REDIS_URL).info("server")["redis_version"],
    }


def print_table(results: list[dict[str, Any]]) -> None:
    columns = [
        ("backlog_messages", "messages"), ("conversations", "convs"), ("limit_msgs_per_s", "limit msg/s"),
        ("limit_with_history_msgs_per_s", "+history msg/s"), ("archive_msgs_per_s", "archiver msg/s"),
        ("ratio_to_limit", "ratio"), ("ratio_to_limit_with_history", "ratio +hist"), ("archive_peak_rss_mb", "peak RSS MB"),
        ("archive_s", "archive s"), ("naive_msgs_per_s", "naive msg/s"),
    ]
    print(" | ".join(f"{title:>14}" for _, title in columns))
    for r in results:
        print(" | ".join(f"{r.get(key, '-')!s:>14}" for key, _ in columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=400_000, help="backlog size in messages (default 400000)")
    parser.add_argument("--memory", default="", help="comma-separated backlog sizes to compare peak RSS across (e.g. 100000,1000000)")
    parser.add_argument("--naive-sample", type=int, default=20_000, help="messages for the naive worker (0 to skip)")
    parser.add_argument("--turns", type=int, default=0,
                        help="seed --messages conversations of this many turns each instead (three checkpoints a turn)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "archive.json")
    parser.add_argument("--naive-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_worker:
        return naive_worker()

    sizes = [int(s) for s in args.memory.split(",") if s.strip()] or [args.messages]
    health = Path("/tmp") / f"bench-health-{os.getpid()}.json"
    results = []
    with redis_server(REDIS_PORT):
        for size in sizes:
            results.append(measure(size, args.naive_sample if len(results) == 0 else 0, args.seed, health, args.turns))
            print(json.dumps(results[-1]), flush=True)
        described = machine()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**described, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        # the archiver's settings from the environment that change its speed
        "archiver": {name: os.environ[name] for name in ("ARCHIVER_WRITERS", "ARCHIVER_BATCH_SIZE") if name in os.environ},
        "results": results,
    }
    if len(results) > 1:
        rss = [r["archive_peak_rss_mb"] for r in results]
        report["rss_spread"] = round(max(rss) / min(rss) - 1, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(results)
    if "rss_spread" in report:
        print(f"peak RSS spread across backlogs: {report['rss_spread']:.1%}")
    print(f"figures written to {args.out}")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
