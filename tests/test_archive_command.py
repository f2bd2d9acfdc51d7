"""archive_checkpoints as operators meet it: output, exit codes, the health file, the run
record, the lock, and the failures it must survive (Redis down, the database unreachable)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from freezegun import freeze_time

from conversations import conf, retry, storage
from conversations.archiving import run_archive
from conversations.exceptions import RunInProgress
from conversations.models import ArchiveRun, ConversationHistory
from conversations.options import Options
from tests.factories import hours_ago, lc, plain_value

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
KEY = "langgraph:checkpoint:wa-msg-abc123:1698765432"
LOCK = conf.DEFAULTS["LOCK_KEY"]


def seed(client, key=KEY, age=24):
    client.set(key, plain_value([lc("human", "hola", "h1"), lc("ai", "buenas", "a1")], ts=hours_ago(age), customer_id="c1"))


def health(settings) -> dict:
    return json.loads(Path(settings.ARCHIVER["HEALTH_FILE"]).read_text())


def test_command_prints_one_summary_line_and_writes_the_guides_health_file(plain_redis, settings):
    out = StringIO()
    with freeze_time("2026-11-29 13:00:00", tick=True):  # 14:00 in Madrid (CET, +01:00)
        seed(plain_redis)  # 24 hours before the frozen clock, the one the archiver reads
        call_command("archive_checkpoints", stdout=out)

    assert out.getvalue().strip().splitlines() == [out.getvalue().strip()]
    assert out.getvalue().startswith("Archived 1 conversations (2 messages)")
    document = health(settings)
    # The guide's five keys first, then the live mirror's two.
    assert list(document) == [
        "last_run", "status", "checkpoints_archived", "messages_archived", "errors",
        "conversations_mirrored", "messages_mirrored",
    ]
    assert document["last_run"].startswith("2026-11-29T14:00:0") and document["last_run"].endswith("+01:00")
    assert (document["status"], document["checkpoints_archived"], document["messages_archived"], document["errors"]) == (
        "healthy", 1, 2, 0
    )
    run = ArchiveRun.objects.get()
    assert (run.status, run.checkpoints_archived, run.messages_archived, run.errors) == ("healthy", 1, 2, 0)
    assert run.finished_at >= run.started_at
    assert not [p for p in Path(settings.ARCHIVER["HEALTH_FILE"]).parent.iterdir() if p.name.endswith(".tmp")]


def test_health_times_carry_the_summer_offset(plain_redis, settings):
    with freeze_time("2026-07-01 12:00:00", tick=True):
        call_command("archive_checkpoints", stdout=StringIO())
    assert health(settings)["last_run"].startswith("2026-07-01T14:00:0") and health(settings)["last_run"].endswith("+02:00")


def test_guide_log_lines(plain_redis, caplog):
    seed(plain_redis)
    with caplog.at_level(logging.INFO, logger="conversations"):
        call_command("archive_checkpoints", stdout=StringIO())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Starting conversation archival run at 20") for m in messages)
    assert "Found 1 expired checkpoints to archive" in messages
    assert any(m.startswith("Completed archival run in ") and m.endswith("s") for m in messages)


@pytest.mark.parametrize(
    "verbosity, logged",
    [
        (0, set()),  # warnings and errors only
        (1, {"INFO"}),
        (2, {"INFO", "DEBUG"}),  # and each batch's conversations
    ],
)
def test_verbosity_sets_what_the_run_logs(plain_redis, caplog, verbosity, logged):
    seed(plain_redis)
    with caplog.at_level(logging.INFO, logger="conversations"):
        caplog.handler.setLevel(logging.DEBUG)
        call_command("archive_checkpoints", verbosity=verbosity, stdout=StringIO())
    assert {r.levelname for r in caplog.records} == logged
    detail = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    if verbosity == 2:
        assert detail == [f"  archived wa-msg-abc123: 2 messages ({KEY})"]
    assert logging.getLogger("conversations").level == logging.INFO  # put back after the run
    assert not plain_redis.exists(KEY)


def test_verbose_and_dry_run_list_what_they_would_do(plain_redis):
    seed(plain_redis)
    out = StringIO()
    call_command("archive_checkpoints", "--dry-run", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("would archive wa-msg-abc123: 2 messages")
    assert lines[-1].startswith("Dry run: would archive 1 conversations (2 messages)")
    assert plain_redis.exists(KEY) and not ConversationHistory.objects.exists()


@pytest.mark.parametrize("flag, value, least", [("--cutoff-hours", "-1", 0), ("--ttl-buffer-minutes", "0", 1), ("--batch-size", "0", 1)])
def test_bad_options_are_refused_before_anything_runs(plain_redis, flag, value, least, settings):
    seed(plain_redis)
    with pytest.raises(CommandError, match=f"{flag} must be at least {least}, not {value}"):
        call_command("archive_checkpoints", flag, value, stdout=StringIO())
    assert plain_redis.exists(KEY) and not Path(settings.ARCHIVER["HEALTH_FILE"]).exists()


def test_cutoff_zero_archives_every_conversation_now(plain_redis):
    seed(plain_redis, age=0.01)
    out = StringIO()
    call_command("archive_checkpoints", "--cutoff-hours", "0", stdout=out)
    assert out.getvalue().startswith("Archived 1 conversations (2 messages)") and not plain_redis.exists(KEY)


def test_cutoff_option_overrides_the_setting(plain_redis):
    seed(plain_redis, age=5)
    call_command("archive_checkpoints", "--cutoff-hours", "4", stdout=StringIO())
    assert not plain_redis.exists(KEY)


def test_redis_down_gives_one_line_an_unhealthy_health_file_and_exit_1(settings, tmp_path):
    health_file = tmp_path / "health.json"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "ARCHIVER_HEALTH_FILE": str(health_file),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "archive_checkpoints"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Redis connection failed: redis://127.0.0.1:1/0" in result.stderr
    assert "Traceback" not in result.stderr
    document = json.loads(health_file.read_text())
    assert (document["status"], document["errors"]) == ("unhealthy", 1)
    assert ArchiveRun.objects.get().status == "unhealthy"


def test_a_dry_run_with_redis_down_ends_with_the_error(settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("archive_checkpoints", "--dry-run", stdout=out)
    assert str(caught.value).startswith("Redis connection failed: redis://127.0.0.1:1/0")
    assert out.getvalue().startswith("Dry run: would archive 0 conversations")


def test_database_unreachable_retries_then_keeps_the_keys(plain_redis, settings, monkeypatch, caplog):
    """A real connection failure: the second batch finds PostgreSQL gone (nothing listens on port 1)."""
    settings.ARCHIVER = {**settings.ARCHIVER, "RETRY_ATTEMPTS": 2, "RETRY_DELAY_SECONDS": 5}
    seed(plain_redis)
    pauses, attempts = [], []
    monkeypatch.setattr(retry, "pause", pauses.append)
    real_write = storage.write_conversations

    def server_gone(conversations, now, since=None):
        attempts.append(len(conversations))
        connection.close()
        connection.settings_dict["PORT"] = "1"
        return real_write(conversations, now, since)

    monkeypatch.setattr(storage, "write_conversations", server_gone)
    port = connection.settings_dict["PORT"]
    try:
        with caplog.at_level(logging.INFO, logger="conversations"):
            report = run_archive(Options.from_settings())
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port

    assert attempts == [1, 1] and pauses == [5]
    assert "Failed to archive wa-msg-abc123 after retry, skipping" in [r.getMessage() for r in caplog.records]
    assert report.errors == 1 and report.archived == 0
    assert plain_redis.exists(KEY)
    assert health(settings)["status"] == "unhealthy"
    assert not ConversationHistory.objects.exists()

    monkeypatch.undo()
    assert run_archive(Options.from_settings()).archived == 1  # the next run completes the work


def test_a_failed_first_attempt_is_retried_and_succeeds(plain_redis, settings, monkeypatch):
    from django.db import OperationalError

    seed(plain_redis)
    real_write = storage.write_conversations
    calls = []

    def flaky(conversations, now, since=None):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_write(conversations, now, since)

    monkeypatch.setattr(storage, "write_conversations", flaky)
    report = run_archive(Options.from_settings())
    assert len(calls) == 2 and report.errors == 0 and report.archived == 1


def test_a_second_run_exits_at_once_while_one_is_going(plain_redis, settings):
    plain_redis.set(LOCK, "another-run", px=60_000)
    seed(plain_redis)
    err = StringIO()
    call_command("archive_checkpoints", stdout=StringIO(), stderr=err)
    assert "Another archival run is in progress" in err.getvalue()
    assert plain_redis.exists(KEY) and not Path(settings.ARCHIVER["HEALTH_FILE"]).exists()
    assert not ArchiveRun.objects.exists()


def test_a_lock_left_by_a_killed_run_expires(plain_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "LOCK_TIMEOUT_SECONDS": 1}
    ArchiveRun.objects.create(started_at=hours_ago(1))  # the killed run's record
    plain_redis.set(LOCK, "killed-run", px=300)
    seed(plain_redis)
    with pytest.raises(RunInProgress):
        run_archive(Options.from_settings())
    time.sleep(0.4)
    report = run_archive(Options.from_settings())
    assert report.archived == 1
    statuses = sorted(ArchiveRun.objects.values_list("status", flat=True))
    assert statuses == ["healthy", "unhealthy"]


def test_two_runs_at_once_one_works_the_other_says_so(plain_redis, monkeypatch):
    for i in range(3):
        seed(plain_redis, key=f"langgraph:checkpoint:c{i}:1")
    real_write = storage.write_conversations
    started = threading.Event()

    def slow(conversations, now, since=None):
        started.set()
        time.sleep(0.5)
        return real_write(conversations, now, since)

    monkeypatch.setattr(storage, "write_conversations", slow)
    results = {}

    def first():
        results["first"] = run_archive(Options.from_settings())
        connection.close()

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(10)
    with pytest.raises(RunInProgress):
        run_archive(Options.from_settings())
    worker.join()
    assert results["first"].archived == 3
    assert ConversationHistory.objects.count() == 6


def test_unwritable_health_file_is_an_error_not_a_loss(plain_redis, settings, tmp_path):
    settings.ARCHIVER = {**settings.ARCHIVER, "HEALTH_FILE": str(tmp_path / "missing-dir" / "health.json")}
    seed(plain_redis)
    with pytest.raises(CommandError):
        call_command("archive_checkpoints", stdout=StringIO(), stderr=StringIO())
    assert ConversationHistory.objects.count() == 2 and not plain_redis.exists(KEY)


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgresql://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_the_embedded_sqlite_default_runs_the_main_job(plain_redis, tmp_path):
    """A newcomer without a database server: DATABASE_URL unset means an SQLite file."""
    import sqlite3

    seed(plain_redis)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="archive_site.settings",
        REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9"),
        ARCHIVER_HEALTH_FILE=str(tmp_path / "health.json"),
    )
    database = tmp_path / "archive.sqlite3"
    env["DATABASE_URL"] = f"sqlite:///{database}"
    for command in (["migrate", "-v", "0"], ["archive_checkpoints"], ["archive_checkpoints"]):
        result = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Archived 0 conversations")  # the second run found nothing left
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT position, role, content, customer_id FROM conversation_history ORDER BY position").fetchall()
        facts = db.execute("SELECT message_count, customer_id FROM archived_conversation").fetchall()
    assert rows == [(0, "human", "hola", "c1"), (1, "ai", "buenas", "c1")]
    assert facts == [(2, "c1")]
    assert not plain_redis.exists(KEY)
