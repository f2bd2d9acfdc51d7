#!/usr/bin/env python
"""purge_history at scale, while the archiver keeps writing.

    python bench/purge_benchmark.py                 (2,000,000 rows)
    python bench/purge_benchmark.py --rows 20000    (CI: keeps it working)

Seeds N archived messages spread evenly over the last 12 months (older rows have lower ids,
as archiving in time order gives them), with their conversation records, in a database of
its own (bench_purge). Then runs the real `manage.py purge_history --months 6` as its own
process and, at the same time, a writer that keeps seeding fresh conversations into Redis
and running the real `archive_checkpoints` on them. It reports the purge's total time, the
number of delete transactions and the longest one (as purge_history measures and prints
them), and what the archiver managed meanwhile. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import archive_benchmark as bench  # noqa: E402  (the same seeding and machine description)

from conversations import conf  # noqa: E402
from harness.servers import redis_server  # noqa: E402

ROOT = bench.ROOT
DB_NAME = "bench_purge"


def url(name: str = DB_NAME) -> str:
    return bench.PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url(),
        "REDIS_URL": bench.REDIS_URL,
        "ARCHIVER_HEALTH_FILE": f"/tmp/bench-purge-health-{os.getpid()}.json",
        "LOG_LEVEL": "WARNING",
    }


def seed_database(rows: int) -> float:
    with psycopg.connect(bench.PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env(), check=True)
    began = time.perf_counter()
    with psycopg.connect(url(), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO conversation_history (conversation_id, customer_id, timestamp, role, content, position,
                message_id, message_key, metadata, source, thread_id, checkpoint_ns, checkpoint_id, archived_at,
                fingerprint)
            SELECT 'conv-' || (g / 20), 'cust-' || ((g / 20) %% 50000),
                   now() - interval '365 days' * (1 - g::float8 / %(n)s),
                   CASE WHEN g %% 2 = 0 THEN 'human' ELSE 'ai' END,
                   'Mensaje ' || g || ': ' || repeat(md5(g::text) || ' pedido envío ', 1 + g %% 6),
                   g %% 20, 'm-' || g, 'id:m-' || g, '{}'::jsonb, 'redis', 'conv-' || (g / 20), '', 'c',
                   now() - interval '365 days' * (1 - g::float8 / %(n)s),
                   left(md5(g::text) || md5(g::text), 40)  -- as wide as the archiver's
            FROM generate_series(0, %(last)s) AS g
            """,
            {"n": rows, "last": rows - 1},
        )
        conn.execute(
            """
            INSERT INTO archived_conversation (conversation_id, customer_id, thread_id, first_message_at,
                last_message_at, message_count, first_archived_at, last_archived_at)
            SELECT conversation_id, min(customer_id), conversation_id, min(timestamp), max(timestamp), count(*), min(timestamp), max(timestamp)
            FROM conversation_history GROUP BY conversation_id
            """
        )
        conn.execute("VACUUM ANALYZE conversation_history")
        conn.execute("VACUUM ANALYZE archived_conversation")
    return time.perf_counter() - began


class Writer(threading.Thread):
    """Keeps the archiver busy: seed fresh conversations, archive them, again, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.runs: list[float] = []
        self.messages = 0

    def run(self) -> None:
        client = redis.Redis.from_url(bench.REDIS_URL)
        rng = random.Random(7)
        lock = conf.DEFAULTS["LOCK_KEY"].encode()
        while not self.stop.is_set():
            # A fresh backlog each time; never FLUSHDB, which would delete the run lock the
            # purge holds and stop it (as it should: the lock is how the two stay apart).
            for key in client.scan_iter(count=1000):
                if key != lock:
                    client.unlink(key)
            bench.ensure_index(client)
            _, messages, _ = bench.seed(client, 2000, rng)
            began = time.perf_counter()
            subprocess.run([sys.executable, "manage.py", "archive_checkpoints"], cwd=ROOT, env=env(), check=True, capture_output=True)
            self.runs.append(time.perf_counter() - began)
            self.messages += messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "purge.json")
    args = parser.parse_args()
    with redis_server(bench.REDIS_PORT):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    seeding = seed_database(args.rows)
    with psycopg.connect(url(), options="-c TimeZone=Europe/Madrid") as conn:
        old = conn.execute("SELECT count(*) FROM conversation_history WHERE timestamp < now() - interval '6 months'").fetchone()[0]
    writer = Writer()
    writer.start()
    time.sleep(2)  # the writer is archiving before the purge starts
    began = time.perf_counter()
    purge = subprocess.run([sys.executable, "manage.py", "purge_history", "--months", "6"], cwd=ROOT, env=env(), capture_output=True, text=True)
    purge_s = time.perf_counter() - began
    writer.stop.set()
    writer.join()
    if purge.returncode != 0:
        raise SystemExit(f"purge_history exited {purge.returncode}: {purge.stderr[-3000:]}")
    summary = purge.stdout.strip().splitlines()[-1]
    found = re.search(r"Deleted (\d+) messages.*; (\d+) delete transactions, the longest ([0-9.]+)s", summary)
    if not found:
        raise SystemExit(f"unexpected purge output: {summary}")
    with psycopg.connect(url(), options="-c TimeZone=Europe/Madrid") as conn:  # the purge's calendar
        left_old = conn.execute("SELECT count(*) FROM conversation_history WHERE timestamp < now() - interval '6 months' - interval '1 minute'").fetchone()[0]
    result: dict[str, Any] = {
        "rows": args.rows,
        "seed_s": round(seeding, 1),
        "older_than_cutoff": old,
        "deleted": int(found.group(1)),
        "purge_s": round(purge_s, 2),
        "rows_per_s": round(int(found.group(1)) / purge_s),
        "transactions": int(found.group(2)),
        "longest_transaction_s": float(found.group(3)),
        "old_rows_left": left_old,
        "concurrent_archive_runs": len(writer.runs),
        "concurrent_messages_archived": writer.messages,
        "concurrent_archive_run_max_s": round(max(writer.runs, default=0), 2),
        "purge_summary": summary,
    }
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": bench.machine(),
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for key, value in result.items():
        print(f"{key:>32}  {value}")
    print(f"figures written to {args.out}")
    with psycopg.connect(bench.PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
