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

This is the command line; the trials themselves are harness/reliability/ (seed, check,
processes, trials, scenarios), which tests/test_reliability.py runs at a small size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.reliability import scenarios  # noqa: E402
from harness.reliability.processes import DB_NAME, PG_ADMIN_URL, REDIS_PORT, Target, fresh_database  # noqa: E402
from harness.reliability.trials import Result  # noqa: E402
from harness.servers import start_redis, stop_redis  # noqa: E402


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
        "sigkill": lambda: scenarios.scenario_sigkill(target, rng, args.trials, args.conversations),
        "pg-terminate": lambda: scenarios.scenario_pg_terminate(target, rng, chaos, args.conversations, PG_ADMIN_URL, DB_NAME),
        "pg-restart": lambda: scenarios.scenario_pg_restart(redis_url, target.health_file, rng, chaos, args.conversations),
        "redis-kill": lambda: scenarios.scenario_redis_kill(target, rng, chaos, args.conversations),
        "redis-restart": lambda: scenarios.scenario_redis_restart(target, REDIS_PORT, rng, chaos, args.conversations),
        "writer": lambda: scenarios.scenario_writer(target, rng, chaos, 8, writer_seconds),
        "concurrent": lambda: scenarios.scenario_concurrent(target, rng, chaos, args.conversations),
        "hostile": lambda: scenarios.scenario_hostile(target, rng, chaos, args.conversations, work),
        "disk-full": lambda: scenarios.scenario_disk_full(target, rng, args.conversations),
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
