"""The Redis server with the JSON and search modules that the tests, the benchmarks and the demo
start for themselves (scripts/start-redis-stack.sh), and stop again when they were the ones to
start it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def start_redis(port: int, work_dir: Path | None = None) -> bool:
    """Start the server on `port` unless one with the modules answers there; True if started.
    `work_dir` holds its files (default /tmp/redis-stack-PORT). Raises SystemExit with the
    script's output when it cannot start."""
    env = {**os.environ, "PYTHON": sys.executable}
    if work_dir is not None:
        env["REDIS_STACK_DIR"] = str(work_dir)
    started = subprocess.run([str(ROOT / "scripts" / "start-redis-stack.sh"), str(port)], capture_output=True, text=True, env=env)
    if started.returncode != 0:
        raise SystemExit(started.stdout + started.stderr)
    return "already listening" not in started.stdout


def stop_redis(port: int) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=2)
    try:
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # already gone: SHUTDOWN closes the connection as the server exits
    finally:
        client.close()


@contextmanager
def redis_server(port: int) -> Iterator[None]:
    """The server on `port` for the duration of the block; stopped after it if started here."""
    started = start_redis(port)
    try:
        yield
    finally:
        if started:
            stop_redis(port)
