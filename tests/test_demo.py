"""`make demo`, headless: scripts/demo.py starts its own Redis, writes conversations through the
real RedisSaver, archives them into SQLite, serves the admin; a support user logs in and reads
them; Ctrl-C stops everything it started."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_until(process: subprocess.Popen, pattern: str, seconds: float) -> tuple[re.Match, str]:
    seen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen += line
        if match := re.search(pattern, line):
            return match, seen
    raise AssertionError(f"the demo never printed {pattern!r}:\n{seen}")


def fetch(opener: urllib.request.OpenerDirector, url: str | urllib.request.Request) -> tuple[str, str]:
    with opener.open(url) as response:
        return response.read().decode(), response.geturl()


def log_in(base: str, user: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    deadline = time.monotonic() + 30
    while True:  # the server may still be starting
        try:
            page, _ = fetch(opener, f"{base}/admin/login/")
            break
        except OSError:
            assert time.monotonic() < deadline, "the admin never answered"
            time.sleep(0.3)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": user, "password": password, "next": "/admin/"})
    request = urllib.request.Request(f"{base}/admin/login/", data=form.encode(), headers={"Referer": f"{base}/admin/login/"})
    _, landed = fetch(opener, request)
    assert landed == f"{base}/admin/", "the login failed"
    return opener


def test_make_demo_runs_end_to_end_and_ctrl_c_stops_what_it_started(tmp_path):
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--port", str(port), "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        match, output = read_until(demo, r"Open (http://127\.0\.0\.1:\d+)/admin/ and log in as (\S+) / (\S+)", 300)
        redis_port = int(re.search(r"on 127\.0\.0\.1:(\d+)", output).group(1))
        assert "mirrored 4 live conversations" in output and "Archived 4 conversations" in output
        base, user, password = match.groups()
        assert base == f"http://127.0.0.1:{port}"

        opener = log_in(base, user, password)
        listing, _ = fetch(opener, f"{base}/admin/conversations/conversationhistory/?q=ORD-1234")
        assert "¿dónde está mi pedido ORD-1234?" in listing
        transcript = re.search(r'href="(/admin/conversations/[^"]*transcript[^"]*)"', listing).group(1)
        page, _ = fetch(opener, base + transcript)
        assert "lookup_order" in page  # the agent's tool call

        demo.send_signal(signal.SIGINT)
        assert demo.wait(30) == 0
        assert "Stopped the admin and the demo Redis." in demo.stdout.read()
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the admin still answers"
        try:
            redis.Redis(port=redis_port, socket_connect_timeout=1).ping()
            raise AssertionError("the demo Redis still answers")
        except redis.ConnectionError:
            pass
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        demo.stdout.close()
