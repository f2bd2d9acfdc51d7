#!/usr/bin/env python
"""The live mirror's cost per run against the number of live conversations, and what a run
does to the bot's own Redis operations.

    python bench/mirror_benchmark.py --live 1000,10000,100000
    python bench/mirror_benchmark.py --latency --latency-live 50000
    python bench/mirror_benchmark.py --live 300 --latency --latency-live 300 --latency-seconds 2   (CI)

Steady state (--live N, for each N):
1. seeds N live conversations as RedisSaver writes them (a checkpoint per turn, each holding
   the messages so far, a latest pointer; every key with a 24-hour TTL), TURNS turns each,
   all of them minutes old: none is due;
2. runs the real `manage.py archive_checkpoints` once: the first mirror reads everything;
3. then ROUNDS times: CHANGED (5%) of the conversations get one more turn, and a run mirrors
   them; and once with no change at all. Each run is its own process: wall time, peak RSS,
   its summary line; at the end every message must be in PostgreSQL once, and no key gone.

Latency (--latency): seeds --latency-live new live conversations (a backlog for one run to
mirror), then a bot thread issues the saver's own operations on a thread of its own, in a loop
(JSON.SET of a new checkpoint, JSON.GET of the newest, FT.SEARCH for the thread's newest as
get_tuple does), for --latency-seconds with no run going, then while a run mirrors the backlog.
Reported: p50/p99/max of each operation, both ways; and Redis's SLOWLOG (threshold 1 ms) of
the archiver's connections (named "conversation-archiver"): how many commands over 1 ms and
over 10 ms, and the longest.

It uses its own database (bench_mirror) and its own Redis server with the modules (port 6395).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
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

# Its own database and Redis server: archive_benchmark's helpers read these when imported.
os.environ["BENCH_DB_NAME"] = os.environ.get("BENCH_MIRROR_DB_NAME", "bench_mirror")
os.environ["BENCH_REDIS_PORT"] = os.environ.get("BENCH_MIRROR_REDIS_PORT", "6395")

from bench import archive_benchmark as bench  # noqa: E402
from harness.documents import checkpoint  # noqa: E402
from harness.servers import redis_server  # noqa: E402

TURNS = 3  # turns (two messages each) a live conversation has when seeded
ROUNDS = 3
CHANGED = 0.05  # share of the live conversations with a new turn between two runs
TTL = 24 * 3600
ARCHIVER = "conversation-archiver"


# --- seeding --------------------------------------------------------------------------------


class Threads:
    """The live conversations: their messages so far and newest checkpoint id, for new turns."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.newest: dict[str, str] = {}

    def seed(self, client: redis.Redis, count: int, prefix: str, turns: int = TURNS) -> None:
        pipe = client.pipeline(transaction=False)
        now = datetime.now(timezone.utc) - timedelta(minutes=30 + turns)
        for n in range(count):
            thread = f"{prefix}{n}"
            self.messages[thread], self.newest[thread] = [], ""
            for turn in range(turns):
                self.turn(pipe, thread, now + timedelta(minutes=turn))
            if len(pipe) >= 600:
                pipe.execute()
        pipe.execute()

    def turn(self, pipe: Any, thread: str, when: datetime | None = None) -> None:
        """One turn as RedisSaver stores it: a checkpoint with the whole conversation so far
        (the customer's message and the bot's answer added), and the pointer moved to it."""
        when = when or datetime.now(timezone.utc)
        messages = self.messages[thread]
        for role in ("human", "ai"):
            body = bench.text(self.rng, 3, 25) if role == "human" else bench.text(self.rng, 15, 60)
            messages.append(bench.lc(role, body, f"{role[0]}-{uuid.UUID(int=self.rng.getrandbits(128))}"))
        ts = when + timedelta(seconds=len(messages))
        cid = bench.checkpoint_id(ts, self.rng)
        key = f"checkpoint:{thread}:__empty__:{cid}"
        doc = checkpoint(thread, cid, self.newest[thread], ts, messages, f"cust-{self.rng.randint(1, 50_000)}")
        pipe.execute_command("JSON.SET", key, "$", json.dumps(doc, ensure_ascii=False))
        pipe.expire(key, TTL)
        pipe.set(f"checkpoint_latest:{thread}:__empty__", key, ex=TTL)
        self.newest[thread] = cid

    def more_turns(self, client: redis.Redis, share: float) -> int:
        chosen = self.rng.sample(sorted(self.messages), max(1, int(len(self.messages) * share)))
        pipe = client.pipeline(transaction=False)
        for thread in chosen:
            self.turn(pipe, thread)
            if len(pipe) >= 600:
                pipe.execute()
        pipe.execute()
        return len(chosen)

    def total(self) -> int:
        return sum(len(m) for m in self.messages.values())


def prepare(client: redis.Redis) -> None:
    for name in client.execute_command("FT._LIST"):
        client.execute_command("FT.DROPINDEX", name)
    client.flushdb()
    bench.ensure_index(client)
    bench.fresh_database()


def archive_run(health: Path) -> tuple[float, int, str]:
    """One real run as its own process: the run's own time (from its summary line; the process
    also starts Django), its peak RSS, its summary line."""
    env = {**bench.django_env(health), "ARCHIVER_MIRROR_LIVE": "1"}
    _, peak, line = bench.run_measured([sys.executable, "manage.py", "archive_checkpoints"], env)
    timed = re.search(r" in ([0-9.]+)s;", line)
    if timed is None:
        raise SystemExit(f"no run time in the summary line: {line!r}")
    return float(timed.group(1)), peak, line


def stored() -> tuple[int, int]:
    """Rows, and rows of a message stored twice (there must be none)."""
    with psycopg.connect(bench.database_url()) as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT message_id) FROM conversation_history").fetchone()
    return rows[0], rows[1]


# --- steady state ---------------------------------------------------------------------------


def steady_state(client: redis.Redis, live: int, seed_value: int, health: Path, turns: int = TURNS) -> dict[str, Any]:
    prepare(client)
    threads = Threads(random.Random(seed_value))
    began = time.perf_counter()
    threads.seed(client, live, "live", turns)
    seeded = time.perf_counter() - began
    keys = client.dbsize()
    runs = []
    first_s, first_mb, first_line = archive_run(health)
    runs.append({"run": "first (everything new)", "changed": live, "seconds": round(first_s, 2), "peak_mb": first_mb, "summary": first_line})
    print(f"  {live} live: first run {first_s:.1f}s: {first_line}", flush=True)
    for round_number in range(1, ROUNDS + 1):
        changed = threads.more_turns(client, CHANGED)
        seconds, peak, line = archive_run(health)
        runs.append({"run": f"steady {round_number}", "changed": changed, "seconds": round(seconds, 2), "peak_mb": peak, "summary": line})
        print(f"  {live} live: {changed} changed: {seconds:.1f}s: {line}", flush=True)
    seconds, peak, line = archive_run(health)
    runs.append({"run": "nothing changed", "changed": 0, "seconds": round(seconds, 2), "peak_mb": peak, "summary": line})
    print(f"  {live} live: nothing changed: {seconds:.1f}s: {line}", flush=True)
    rows, doubled = stored()
    expected = threads.total()
    keys += sum(r["changed"] for r in runs[1:])  # a new turn adds one checkpoint; the mirror deletes none
    if rows != expected or doubled or client.dbsize() != keys:
        print(f"  PROBLEM: {rows} rows for {expected} messages, {doubled} doubled, {client.dbsize()} keys of {keys}", flush=True)
    steady = [r["seconds"] for r in runs if r["run"].startswith("steady")]
    return {
        "live": live, "turns_each": turns, "messages": expected, "seed_s": round(seeded, 1), "runs": runs,
        "first_run_s": runs[0]["seconds"], "steady_run_s": round(statistics.mean(steady), 2),
        "unchanged_run_s": runs[-1]["seconds"], "rows_ok": rows == expected and not doubled and client.dbsize() == keys,
    }


# --- latency --------------------------------------------------------------------------------


class Bot(threading.Thread):
    """The saver's own operations on one thread, in a loop, each one timed."""

    def __init__(self, url: str, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, client_name="bot")
        self.rng = rng
        self.times: dict[str, list[float]] = {"JSON.SET": [], "JSON.GET": [], "FT.SEARCH": []}
        self.stop = threading.Event()
        self.recording = threading.Event()

    def run(self) -> None:
        parent, messages, step = "", [], 0
        while not self.stop.is_set():
            # A conversation of 20 checkpoints, then the next one: the thread's search stays
            # the size a real conversation's is, whatever the length of the measurement.
            thread = f"latencybot{step // 20}"
            if step % 20 == 0:
                parent, messages = "", []
            step += 1
            messages = messages + [bench.lc("human", bench.text(self.rng, 3, 25), f"h-{uuid.uuid4()}")]
            ts = datetime.now(timezone.utc)
            cid = bench.checkpoint_id(ts, self.rng)
            key = f"checkpoint:{thread}:__empty__:{cid}"
            doc = json.dumps(checkpoint(thread, cid, parent, ts, messages, "cust-1"), ensure_ascii=False)
            self.timed("JSON.SET", "JSON.SET", key, "$", doc)
            self.timed("JSON.GET", "JSON.GET", key)
            self.timed(
                "FT.SEARCH", "FT.SEARCH", "checkpoint", f"@thread_id:{{{thread}}} @checkpoint_ns:{{__empty__}}",
                "SORTBY", "checkpoint_id", "DESC", "LIMIT", "0", "1",
            )
            parent = cid
            time.sleep(0.002)  # a busy bot, not a benchmark loop

    def timed(self, name: str, *command: Any) -> None:
        began = time.perf_counter()
        self.client.execute_command(*command)
        if self.recording.is_set():
            self.times[name].append((time.perf_counter() - began) * 1000)

    def collect(self) -> dict[str, list[float]]:
        collected, self.times = self.times, {name: [] for name in self.times}
        return collected


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(ordered), "p50_ms": round(ordered[len(ordered) // 2], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3), "max_ms": round(ordered[-1], 3),
    }


def pin(client: redis.Redis) -> dict[str, Any]:
    """Redis on the first core, this process (the bot) and the archiver it starts on the others:
    what is then left of the bot's slowdown is the archiver's load on Redis, not a shared CPU."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return {"pinned": False}
    server = int(client.info("server")["process_id"])
    os.sched_setaffinity(server, {cores[0]})
    os.sched_setaffinity(0, set(cores[1:]))
    return {"pinned": True, "redis_core": cores[0], "others": cores[1:]}


def latency(client: redis.Redis, live: int, seconds: float, seed_value: int, health: Path, pinned: bool = False) -> dict[str, Any]:
    prepare(client)
    placement = pin(client) if pinned else {"pinned": False}
    Threads(random.Random(seed_value)).seed(client, live, "backlog")
    client.config_set("slowlog-log-slower-than", 1000)  # microseconds
    client.config_set("slowlog-max-len", 100000)
    client.slowlog_reset()
    bot = Bot(bench.REDIS_URL, random.Random(seed_value + 1))
    bot.start()
    time.sleep(0.5)  # warm up
    bot.recording.set()
    time.sleep(seconds)
    idle = bot.collect()
    run_result: dict[str, Any] = {}

    def run() -> None:
        run_result["seconds"], run_result["peak_mb"], run_result["summary"] = archive_run(health)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join()
    during = bot.collect()
    bot.stop.set()
    bot.join()
    entries = client.slowlog_get(100000)
    archiver = [e for e in entries if (e.get("client_name") or b"") in (ARCHIVER, ARCHIVER.encode())]
    bot_slow = [e for e in entries if (e.get("client_name") or b"") in ("bot", b"bot")]
    longest = max(archiver, key=lambda e: e["duration"], default=None)
    return {
        "live": live, "idle_seconds": seconds, "run": run_result, "cpu": placement,
        "idle": {name: percentiles(v) for name, v in idle.items()},
        "during_run": {name: percentiles(v) for name, v in during.items()},
        "slowlog": {
            "archiver_over_1ms": len(archiver),
            "archiver_over_10ms": sum(1 for e in archiver if e["duration"] > 10_000),
            "archiver_longest_ms": round(longest["duration"] / 1000, 2) if longest else 0,
            "archiver_longest_command": _command(longest) if longest else "",
            "bot_over_1ms": len(bot_slow),
        },
    }


def _command(entry: dict[str, Any]) -> str:
    words = entry.get("command", b"")
    text = words.decode("utf-8", "replace") if isinstance(words, bytes) else str(words)
    return text[:120]


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", default="1000,10000", help="comma-separated numbers of live conversations (default 1000,10000)")
    parser.add_argument("--turns", type=int, default=TURNS, help=f"turns each live conversation has when seeded (default {TURNS})")
    parser.add_argument("--latency", action="store_true", help="also measure the bot's operations during a run")
    parser.add_argument("--latency-live", type=int, default=50000, help="the backlog the measured run mirrors (default 50000)")
    parser.add_argument("--latency-seconds", type=float, default=20, help="how long the bot is timed with no run going (default 20)")
    parser.add_argument("--pin", action="store_true", help="latency: Redis on a core of its own (see pin())")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mirror.json")
    args = parser.parse_args()
    sizes = [int(n) for n in args.live.split(",") if n.strip() and int(n) > 0]  # 0: latency only
    health = Path(f"/tmp/bench-mirror-health-{os.getpid()}.json")
    results: dict[str, Any] = {"steady_state": [], "rounds": ROUNDS, "changed_share": CHANGED}
    with redis_server(bench.REDIS_PORT):
        client = redis.Redis.from_url(bench.REDIS_URL)
        results["machine"] = bench.machine()
        for live in sizes:
            print(f"steady state, {live} live conversations ...", flush=True)
            results["steady_state"].append(steady_state(client, live, args.seed, health, args.turns))
        if args.latency:
            print(f"latency, a run mirroring {args.latency_live} new conversations ...", flush=True)
            results["latency"] = latency(client, args.latency_live, args.latency_seconds, args.seed, health, args.pin)
        client.close()
    health.unlink(missing_ok=True)
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"figures written to {args.out}")
    if not all(r["rows_ok"] for r in results["steady_state"]):
        raise SystemExit("some messages were not stored exactly once")


def report(results: dict[str, Any]) -> None:
    print(f"{'live':>8} {'messages':>9} {'first run':>10} {'5% changed':>11} {'unchanged':>10}")
    for r in results["steady_state"]:
        print(f"{r['live']:>8} {r['messages']:>9} {r['first_run_s']:>9.1f}s {r['steady_run_s']:>10.1f}s {r['unchanged_run_s']:>9.1f}s")
    if "latency" in results:
        lat = results["latency"]
        print(f"bot operations, idle vs during a run mirroring {lat['live']} conversations ({lat['run'].get('seconds', 0):.1f}s):")
        for name in lat["idle"]:
            idle, during = lat["idle"][name], lat["during_run"][name]
            print(f"  {name:10s} idle p50 {idle.get('p50_ms')} p99 {idle.get('p99_ms')} max {idle.get('max_ms')} | "
                  f"run p50 {during.get('p50_ms')} p99 {during.get('p99_ms')} max {during.get('max_ms')} (n={during['n']})")
        print(f"  slowlog: {lat['slowlog']}")


if __name__ == "__main__":
    main()
