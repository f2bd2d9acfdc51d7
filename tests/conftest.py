"""Fixtures: real Redis servers and archiver settings pointing at them.

- `plain_redis`: the machine's Redis (127.0.0.1:6379), database TEST_REDIS_DB, flushed
  around each test. Enough for the plain layout, which needs no modules.
- `stack_redis`: a Redis with the JSON and search modules, which the real
  langgraph-checkpoint-redis savers need; started here by scripts/start-redis-stack.sh
  when nothing answers on STACK_PORT. RediSearch works on database 0 only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness.servers import stop_redis

ROOT = Path(__file__).resolve().parent.parent
PLAIN_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
STACK_PORT = int(os.environ.get("TEST_STACK_PORT", "6390"))
STACK_URL = f"redis://127.0.0.1:{STACK_PORT}/0"


def clock_environment() -> dict[str, str]:
    """The variables that set this process's clock (libfaketime's, with which CI moves the whole
    suite in time): a child started with an emptied environment, as cron starts its jobs,
    keeps them, so that it reads the same clock as the test that made its data."""
    return {k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "DONT_FAKE_MONOTONIC") or k.startswith("FAKETIME")}


@pytest.fixture(scope="session")
def stack_server() -> Iterator[str]:
    """The Redis server with modules; stopped at the end of the session if this session
    started it (one that was already running is left as it was found)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "start-redis-stack.sh"), str(STACK_PORT)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot start the Redis server with modules: {result.stdout}{result.stderr}")
    yield STACK_URL
    if "already listening" not in result.stdout:
        stop_redis(STACK_PORT)


def _flushed(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def plain_redis(settings, tmp_path) -> Iterator[redis.Redis]:
    _configure(settings, tmp_path, PLAIN_URL)
    yield from _flushed(PLAIN_URL)


@pytest.fixture
def stack_redis(settings, tmp_path, stack_server) -> Iterator[redis.Redis]:
    _configure(settings, tmp_path, stack_server)
    yield from _flushed(stack_server)


def _configure(settings, tmp_path: Path, url: str) -> None:
    settings.ARCHIVER = {
        **settings.ARCHIVER,
        "REDIS_URL": url,
        "HEALTH_FILE": str(tmp_path / "archiver_health.json"),
        "METRICS_TEXTFILE": str(tmp_path / "archiver_metrics.prom"),
        "RETRY_DELAY_SECONDS": 0,
        # The archiving tests see archiving alone; tests/test_mirror.py turns the mirror on.
        "MIRROR_LIVE": False,
    }
