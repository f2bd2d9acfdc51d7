"""Nothing is lost, nothing is doubled: the archiver killed, its servers gone, the bot writing
meanwhile, several archivers at once, a health file it cannot write.

The archiver runs as its own process (`manage.py archive_checkpoints`) against a backlog whose
messages are known (harness/reliability/ seeds it and compares the archive with it); the same
scenarios run larger and longer from bench/reliability.py, whose figures docs/reliability.md
reports.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from conversations.archiving import run_archive
from conversations.models import ArchiveRun, ConversationHistory
from conversations.options import Options
from harness import lgwriter
from harness.reliability import check, processes, scenarios, seed, trials
from tests.factories import hours_ago, lc, plain_value

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]

ROOT = Path(__file__).resolve().parent.parent


def database_url(port: int | None = None, name: str | None = None) -> str:
    s = connection.settings_dict
    return f"postgresql://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{port or s['PORT'] or 5432}/{name or s['NAME']}"


def stack_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.fixture
def target(stack_redis, tmp_path) -> processes.Target:
    connection.close()  # the scenarios truncate the tables from their own connection
    target = processes.Target(database_url(), stack_url(stack_redis), tmp_path / "archiver_health.json")
    target.reset()
    return target


def assert_clean(result: trials.Result) -> None:
    figures = result.as_dict()
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["unexpected"] == 0, figures
    assert figures["misordered"] == 0 and figures["leftover_keys"] == 0, figures
    assert result.problems == [], figures
    assert result.trials >= 1 and result.total.messages > 0


# --- crashes ------------------------------------------------------------------------------


def test_sigkill_at_random_moments_loses_and_doubles_nothing(target):
    """Killed 1-3 times per trial at random moments; after one clean run every seeded message
    (ids and contents, in order) is archived exactly once and Redis holds nothing of them.
    Right after each kill every message is in PostgreSQL or still in Redis."""
    result = scenarios.scenario_sigkill(target, random.Random(6), trials=2, conversations=250, real=4, log=lambda _: None)
    assert_clean(result)
    assert result.facts.get("kills", 0) >= 2, result.facts


# --- PostgreSQL goes away -----------------------------------------------------------------


def test_postgres_connections_terminated_again_and_again(target):
    """pg_terminate_backend on the archiver's connections every 0.05-0.3 s during a run."""
    result = scenarios.scenario_pg_terminate(
        target, random.Random(2), trials=1, conversations=300, admin_url=database_url(name="postgres"),
        database=connection.settings_dict["NAME"], every=(0.05, 0.3), log=lambda _: None,
    )
    assert_clean(result)
    assert result.facts["connections_terminated"] >= 1, result.facts


class Outage:
    """A TCP relay in front of PostgreSQL that can go down (every connection dropped, new ones
    closed at once, as a stopped server would) and come back."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.available = True
        self.sockets: list[socket.socket] = []
        self.closing: list[socket.socket] = []
        self.pumps: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.available:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                pump = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                self.pumps.append(pump)
                pump.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self) -> None:
        """Drop every connection; the pumps end on their own, the sockets are closed once both
        directions are done with them (close() under a running recv() would not wake it)."""
        self.available = False
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.closing += self.sockets
            self.sockets = []

    def up(self) -> None:
        self.available = True

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the acceptor's accept() (close() alone would not)
        self.acceptor.join(timeout=10)
        self.listener.close()
        self.down()
        for pump in self.pumps:
            pump.join(timeout=10)
        for s in self.closing:
            s.close()


@pytest.fixture
def outage() -> Iterator[Outage]:
    s = connection.settings_dict
    relay = Outage(s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432))
    yield relay
    relay.close()


def test_postgres_down_mid_run_retries_twice_one_second_apart_then_the_next_run_completes(target, outage):
    backlog = seed.seed_backlog(target, random.Random(3), 300)
    through_relay = processes.Target(database_url(port=outage.port), target.redis_url, target.health_file)
    archiver = processes.Archiver(through_relay, "--batch-size", "20")
    processes.wait_for_rows(target, archiver)
    outage.down()
    time.sleep(2.5)
    outage.up()
    run = archiver.wait()

    assert run.returncode == 1, run.stderr[-2000:]
    first, later, gaps = check.retry_gaps(run.stderr)
    assert first >= 1 and later == 0  # ARCHIVER_RETRY_ATTEMPTS=2: one retry per batch, never a third attempt
    assert "retrying in 1s" in run.stderr and min(gaps) >= 0.95, gaps
    failed = re.findall(r"Failed to archive (\S+) after retry, skipping", run.stderr)
    assert failed
    assert check.health(target)["status"] == "unhealthy"
    # Nothing was deleted from Redis that was not committed: every message is in one place or both.
    present = check.still_in_redis(target.client(), backlog)
    rows = check.archived_rows(target.db_url)
    assert check.compare(backlog, rows, in_redis=present).lost == 0
    assert set(failed) <= present
    assert ArchiveRun.objects.get().status == "unhealthy"

    clean = processes.archive_once(target)
    assert clean.returncode == 0, clean.stderr[-2000:]
    tally = check.compare(backlog, check.archived_rows(target.db_url))
    assert tally.clean and tally.lost == 0, tally.as_dict()
    assert check.leftover_keys(target.client(), backlog) == []
    assert check.health(target)["status"] == "healthy"


# --- Redis goes away ----------------------------------------------------------------------


def test_redis_dropping_connections_mid_run(target):
    """CLIENT KILL TYPE normal every 10-30 ms while the run, held mid-way by construction, waits
    on Redis: the run says it failed (exit 1, unhealthy), nothing is lost, and the next run
    completes the work."""
    result = scenarios.scenario_redis_kill(target, random.Random(4), trials=1, conversations=300,
                                             every=(0.01, 0.03), log=lambda _: None)
    assert_clean(result)
    assert result.facts["trials_disturbed_mid_run"] == 1 and result.facts["connections_killed"] >= 1, result.facts
    assert result.facts.get("disturbed_runs_exit_1") == 1, result.facts


# --- the bot writes meanwhile -------------------------------------------------------------


def test_the_bot_writing_through_the_real_savers_while_runs_go_on(target):
    """Eight threads (all four savers) get new turns while the archiver runs again and again;
    after a final run the archive holds every message LangGraph reported, once, in order."""
    result = scenarios.scenario_writer(target, random.Random(5), trials=1, threads=8, seconds=8, log=lambda _: None)
    assert_clean(result)
    assert result.facts["turns_written"] >= 8 and result.facts["archiver_runs"] >= 2, result.facts


def archive_from_the_bots_thread() -> None:
    """A run started inside the bot's saver call, which LangGraph may make from a worker thread
    of its own: that thread's database connection is closed after the run."""
    try:
        run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=24)))
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()


def saver_with_archive_before_pointer_moves(monkeypatch, trigger_on: int) -> dict[str, int]:
    """Make the bot's RedisSaver pause between storing a new checkpoint document and moving
    `checkpoint_latest` to it (two separate commands in RedisSaver.put), and run the archiver
    right there on the `trigger_on`-th such moment (0: never, only count)."""
    real_set = redis.Redis.set
    seen = {"pointer_moves": 0, "archived_in_between": 0}

    def set_(self, name, value, *args, **kwargs):
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key.startswith("checkpoint_latest:"):
            seen["pointer_moves"] += 1
            if seen["pointer_moves"] == trigger_on:
                archive_from_the_bots_thread()
                seen["archived_in_between"] += 1
        return real_set(self, name, value, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "set", set_)
    return seen


def test_a_checkpoint_stored_just_before_the_archiver_deletes_the_thread_is_not_lost(stack_redis, monkeypatch):
    """RedisSaver.put stores the new checkpoint (which the search index lists at once), then
    moves the latest pointer. An archiver deleting the thread in between must not delete the
    new checkpoint: it holds the bot's answer, which is nowhere else."""
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, "scratch", ["hola"])
    counting = saver_with_archive_before_pointer_moves(monkeypatch, trigger_on=0)
    lgwriter.write_conversation(url, "scratch", ["¿y mi pedido?"])
    moves_per_turn = counting["pointer_moves"]
    monkeypatch.undo()
    stack_redis.flushdb()
    processes.create_indexes(url)

    first = lgwriter.write_conversation(url, "t-race", ["hola"])
    seen = saver_with_archive_before_pointer_moves(monkeypatch, trigger_on=moves_per_turn)  # the turn's last checkpoint
    bot_error = None
    try:
        lgwriter.write_conversation(url, "t-race", ["¿y mi pedido?"])
    except Exception as exc:  # noqa: BLE001 - lgwriter's own checks fail when the thread vanished under it
        bot_error = exc
    monkeypatch.undo()
    assert seen["archived_in_between"] == 1
    assert bot_error is None, f"the bot lost its own conversation: {bot_error!r}"

    in_redis = lgwriter.conversation_state(url, "t-race")["messages"]
    run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))
    ids = list(ConversationHistory.objects.filter(conversation_id="t-race").order_by("position").values_list("message_id", flat=True))
    assert len(in_redis) == len(first) + 2  # the bot's view after the turn: the user's question and its answer
    assert ids == [m["id"] for m in in_redis]
    assert sorted(stack_redis.scan_iter(count=1000)) == []


def archive_after_the_input_checkpoint(monkeypatch, saver: str) -> dict[str, int]:
    """Make the bot's (sync) saver run the archiver right after it stored the next run's input
    checkpoint, the moment at which the user's message is only in `__start__`, without an id."""
    cls = lgwriter._saver_class(saver)
    real_put = cls.put
    seen = {"runs_in_between": 0}

    def put(self, config, checkpoint, metadata, new_versions):
        stored = real_put(self, config, checkpoint, metadata, new_versions)
        if metadata.get("source") == "input" and not seen["runs_in_between"]:
            archive_from_the_bots_thread()
            seen["runs_in_between"] += 1
        return stored

    monkeypatch.setattr(cls, "put", put)
    return seen


@pytest.mark.parametrize("saver", ["redis", "shallow"])
def test_a_users_message_read_from_an_input_checkpoint_is_archived_once(stack_redis, monkeypatch, saver):
    """Archived while the bot's run has stored only its input, the user's message has no id
    yet and is kept provisionally; when the run goes on and LangGraph gives it an id, that row
    becomes the message (same place, its id), not a second copy."""
    url = stack_url(stack_redis)
    lgwriter.write_conversation(url, "t-input", ["hola"], saver=saver)
    seen = archive_after_the_input_checkpoint(monkeypatch, saver)
    expected = lgwriter.write_conversation(url, "t-input", ["¿sigue ahí?"], saver=saver)
    monkeypatch.undo()
    assert seen["runs_in_between"] == 1
    assert ConversationHistory.objects.filter(message_key__startswith="input:").count() == 1  # the provisional row

    run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    rows = list(ConversationHistory.objects.filter(conversation_id="t-input").order_by("position").values_list("message_id", "content", "message_key"))
    assert [(i, c) for i, c, _ in rows] == [(m["id"], m["content"]) for m in expected]
    assert [k for _, _, k in rows] == [f"id:{m['id']}" for m in expected]


@pytest.mark.parametrize("saver", ["redis", "shallow"])
def test_archiving_a_thread_leaves_threads_the_search_index_confuses_with_it_alone(stack_redis, saver):
    """The savers' search index matches thread ids without case and splits them at commas:
    a query for "Conv-A" also finds "conv-a"'s documents, one for "x" finds "x,y"'s. Archiving
    one thread must not delete the other's checkpoints."""
    url = stack_url(stack_redis)
    due = lgwriter.write_conversation(url, "Conv-A", ["hola"], saver=saver, ttl_minutes=30)  # about to expire: due
    lgwriter.write_conversation(url, "x", ["hola"], saver=saver, ttl_minutes=30)
    neighbours = {t: lgwriter.write_conversation(url, t, ["sigo aquí"], saver=saver) for t in ("conv-a", "CONV-A", "x,y")}

    report = run_archive(Options.from_settings())

    assert report.archived == 2 and report.errors == 0
    assert [m["id"] for m in lgwriter.conversation_state(url, "Conv-A", saver=saver)["messages"]] == []
    assert ConversationHistory.objects.filter(conversation_id="Conv-A").count() == len(due)
    for thread, expected in neighbours.items():
        assert lgwriter.conversation_state(url, thread, saver=saver)["messages"] == expected, thread
        assert not ConversationHistory.objects.filter(conversation_id=thread).exists()


# --- several archivers at once ------------------------------------------------------------


def test_two_and_three_archivers_started_at_once(target):
    """One does the work; the others say another run is in progress and exit 0."""
    result = scenarios.scenario_concurrent(target, random.Random(7), trials=2, conversations=400, log=lambda _: None)
    assert_clean(result)
    assert result.facts == {"trials_with_2_archivers": 1, "trials_with_3_archivers": 1}


# --- the health file cannot be written ----------------------------------------------------


def seed_plain(client: redis.Redis, n: int = 3) -> None:
    for i in range(n):
        client.set(f"langgraph:checkpoint:c{i}:1", plain_value([lc("human", f"hola {i}", f"h{i}"), lc("ai", "buenas", f"a{i}")], ts=hours_ago(30)))


def test_a_full_disk_for_the_health_file_is_a_clear_error_and_loses_nothing(plain_redis, settings, monkeypatch, tmp_path):
    health_file = Path(settings.ARCHIVER["HEALTH_FILE"])
    health_file.write_text('{"status": "healthy", "previous": true}\n')
    seed_plain(plain_redis)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("conversations.files.os.fsync", disk_full)
    err = StringIO()
    with pytest.raises(CommandError, match="Archived 3 conversations"):
        call_command("archive_checkpoints", stdout=StringIO(), stderr=err)

    assert f"health file: [Errno {errno.ENOSPC}] No space left on device" in err.getvalue()
    assert ConversationHistory.objects.count() == 6 and plain_redis.dbsize() == 0  # archived, nothing lost
    assert json.loads(health_file.read_text()) == {"status": "healthy", "previous": True}  # never half-written
    left = sorted(p.name for p in health_file.parent.iterdir())
    assert left == ["archiver_health.json", "archiver_metrics.prom"]  # no temporary file left
    run = ArchiveRun.objects.get()
    assert (run.status, run.errors) == ("unhealthy", 1)  # the run record agrees with the exit code
    assert "No space left on device" in run.error_messages


def test_an_unwritable_health_path_fails_the_run_in_one_line_and_loses_nothing(plain_redis, tmp_path):
    seed_plain(plain_redis)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "archive_site.settings", "DATABASE_URL": database_url(),
        "REDIS_URL": _plain_url(plain_redis),
        "ARCHIVER_HEALTH_FILE": str(blocker / "health.json"), "LOG_LEVEL": "WARNING",
    }
    result = subprocess.run([sys.executable, "manage.py", "archive_checkpoints"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert f"Cannot write the health file {blocker / 'health.json'}: [Errno {errno.ENOTDIR}] Not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert ConversationHistory.objects.count() == 6 and plain_redis.dbsize() == 0


def _plain_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
