"""The processes of a trial: the archiver under test (started, killed at a chosen moment, its
lock expired), and the servers under it (databases made and migrated, a throwaway
PostgreSQL cluster stopped and started, connections terminated or dropped, a run held at its
first insert).

The archiver always runs as its own process, `manage.py archive_checkpoints` from the
repository root, with its output in files (never a pipe that could fill up and stall it).
Everything here uses its own database, Redis port and cluster (RELIA_* variables), so a
trial disturbs nothing else on the machine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import redis

from conversations.conf import DEFAULTS
from harness.reliability.check import count_rows
from harness.reliability.seed import Backlog

ROOT = Path(__file__).resolve().parents[2]

PG_ADMIN_URL = os.environ.get("RELIA_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DB_NAME = os.environ.get("RELIA_DB_NAME", "relia_archive")
REDIS_PORT = int(os.environ.get("RELIA_REDIS_PORT", "6396"))
# The throwaway PostgreSQL cluster of pg-restart (Debian's pg_createcluster).
PG_VERSION = os.environ.get("RELIA_PG_VERSION", "15")
PG_CLUSTER = os.environ.get("RELIA_PG_CLUSTER", "relia")
PG_CLUSTER_PORT = int(os.environ.get("RELIA_PG_CLUSTER_PORT", "5499"))

# The run lock as the archiver takes it (its defaults: the trials override neither).
LOCK_KEY = DEFAULTS["LOCK_KEY"]
LOCK_TIMEOUT_MS = DEFAULTS["LOCK_TIMEOUT_SECONDS"] * 1000
# The archiver's connections carry this application_name, so only they are terminated.
APP_NAME = "relia-archiver"
TABLES = ("conversation_history", "archived_conversation", "quarantined_checkpoint", "archive_run")


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


def terminate_backends(admin_url: str, database: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND application_name = %s",
            (database, APP_NAME),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def kill_redis_clients(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url, protocol=2)
    try:
        return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    finally:
        client.close()


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
