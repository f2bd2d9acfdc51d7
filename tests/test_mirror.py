"""The live mirror: every run copies the new messages of the conversations not yet due, against
real Redis and PostgreSQL; real bots (harness/agents.py, with the saver this project installs)
write their turns while the archiver runs between them."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations import storage
from conversations.archiving import run_archive
from conversations.models import ArchivedConversation, ArchiveRun, ConversationHistory, LiveThread
from conversations.options import Options
from tests.factories import hours_ago, lc, plain_value
from tests.test_agents import empty, saver_python, stack_url  # noqa: F401 (saver_python: a fixture)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
KEY = "langgraph:checkpoint:wa-live:1"


@pytest.fixture
def mirrored_redis(plain_redis: redis.Redis, settings: Any) -> redis.Redis:
    settings.ARCHIVER = {**settings.ARCHIVER, "MIRROR_LIVE": True}
    return plain_redis


@pytest.fixture
def stack(stack_redis: redis.Redis, settings: Any) -> Any:
    settings.ARCHIVER = {**settings.ARCHIVER, "MIRROR_LIVE": True}
    empty(stack_redis)
    yield stack_redis
    empty(stack_redis)


def rows(conversation_id: str = "wa-live") -> list[ConversationHistory]:
    return list(ConversationHistory.objects.filter(conversation_id=conversation_id).order_by("position"))


def texts(conversation_id: str = "wa-live") -> list[tuple[str, bool]]:
    """Each archived message's text, and whether the bot still has it."""
    return [(r.content, r.removed_at is None) for r in rows(conversation_id)]


def bot_writes(client: redis.Redis, *messages: dict[str, Any], age_hours: float = 0.1) -> None:
    client.set(KEY, plain_value(list(messages), ts=hours_ago(age_hours), customer_id="c-7"), ex=24 * 3600)


# --- the plain layout: hand-made values, one key per conversation ---


def test_a_live_conversation_is_copied_at_every_run_and_its_key_stays(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas", "a1"))

    first = run_archive(Options.from_settings())

    assert (first.archived, first.mirrored, first.mirrored_messages, first.messages) == (0, 1, 2, 0)
    assert texts() == [("hola", True), ("buenas", True)]
    assert mirrored_redis.exists(KEY)
    live = LiveThread.objects.get()
    assert (live.source, live.key, live.conversation_id, live.since_position) == ("plain", KEY, "wa-live", 0)
    assert live.expires_at > timezone.now() + timedelta(hours=23)

    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas", "a1"), lc("human", "¿y mi pedido?", "h2"))
    second = run_archive(Options.from_settings())

    assert (second.mirrored, second.mirrored_messages) == (1, 1)
    assert texts() == [("hola", True), ("buenas", True), ("¿y mi pedido?", True)]
    assert ArchivedConversation.objects.get(conversation_id="wa-live").message_count == 3


def test_a_run_reads_only_the_conversations_that_changed(mirrored_redis, monkeypatch):
    for n in range(5):
        mirrored_redis.set(f"langgraph:checkpoint:still-{n}:1", plain_value([lc("human", f"hola {n}", f"h{n}")], ts=hours_ago(1)))
    assert run_archive(Options.from_settings()).mirrored == 5
    from conversations.checkpoints.plain import PlainLayout

    loaded: list[str] = []
    real_load = PlainLayout.load
    monkeypatch.setattr(PlainLayout, "load", lambda self, client, due: loaded.extend(c.key for c in due) or real_load(self, client, due))
    mirrored_redis.set("langgraph:checkpoint:still-3:1", plain_value([lc("human", "hola 3", "h3"), lc("ai", "dime", "a3")], ts=hours_ago(0.5)))

    report = run_archive(Options.from_settings())

    assert (report.mirrored, report.mirrored_messages) == (1, 1)
    assert loaded == ["langgraph:checkpoint:still-3:1"]
    unchanged = run_archive(Options.from_settings())
    assert (unchanged.mirrored, unchanged.mirrored_messages) == (0, 0)
    assert ConversationHistory.objects.count() == 6


def test_a_message_mirrored_live_is_not_stored_again_when_archived_nor_when_trimmed(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas", "a1"))
    run_archive(Options.from_settings())
    # The bot trims "hola": the only checkpoint it was in is overwritten.
    bot_writes(mirrored_redis, lc("ai", "buenas", "a1"), lc("human", "adiós", "h2"))
    trimmed = run_archive(Options.from_settings())

    assert trimmed.mirrored_messages == 1
    assert texts() == [("hola", False), ("buenas", True), ("adiós", True)]

    bot_writes(mirrored_redis, lc("ai", "buenas", "a1"), lc("human", "adiós", "h2"), age_hours=24)
    archived = run_archive(Options.from_settings())

    assert (archived.archived, archived.messages, archived.mirrored) == (1, 0, 0)
    assert texts() == [("hola", False), ("buenas", True), ("adiós", True)]
    assert not mirrored_redis.exists(KEY)
    assert not LiveThread.objects.exists()


def test_a_crash_between_the_rows_and_the_watermark_duplicates_nothing(mirrored_redis, monkeypatch):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas"))  # one without an id

    def killed(*args: Any) -> None:
        raise SystemExit("killed after the rows committed")

    monkeypatch.setattr(storage, "keep_live", killed)
    with pytest.raises(SystemExit):
        run_archive(Options.from_settings())
    assert len(rows()) == 2 and not LiveThread.objects.exists()

    monkeypatch.undo()
    again = run_archive(Options.from_settings())

    assert (again.mirrored, again.mirrored_messages) == (1, 0)
    assert texts() == [("hola", True), ("buenas", True)]
    assert LiveThread.objects.count() == 1


def test_a_thread_started_over_after_it_was_archived_keeps_the_old_rows_unmarked(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), age_hours=24)
    run_archive(Options.from_settings())
    bot_writes(mirrored_redis, lc("human", "otra vez", "h2"))

    report = run_archive(Options.from_settings())

    assert report.mirrored_messages == 1
    assert texts() == [("hola", True), ("otra vez", True)]
    assert LiveThread.objects.get().since_position == 1


def test_with_the_mirror_off_only_due_conversations_are_stored(mirrored_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "MIRROR_LIVE": False}
    bot_writes(mirrored_redis, lc("human", "hola", "h1"))
    out = StringIO()

    call_command("archive_checkpoints", stdout=out)

    assert not ConversationHistory.objects.exists() and not LiveThread.objects.exists()
    assert out.getvalue().startswith("Archived 0 conversations (0 messages) in ")


def test_no_mirror_flag_and_dry_run(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas", "a1"))
    out = StringIO()

    call_command("archive_checkpoints", "--no-mirror", stdout=out)
    assert not ConversationHistory.objects.exists()
    call_command("archive_checkpoints", "--dry-run", stdout=out)

    assert "would mirror 1 live conversations: 2 new messages" in out.getvalue()
    assert "and would mirror 1 live conversations (2 new messages)" in out.getvalue().splitlines()[-1]
    assert not ConversationHistory.objects.exists() and not LiveThread.objects.exists()


def test_the_summary_line_health_file_and_run_record_count_the_mirror(mirrored_redis, settings, caplog):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), lc("ai", "buenas", "a1"))
    out = StringIO()

    with caplog.at_level("INFO", logger="conversations"):
        call_command("archive_checkpoints", stdout=out)

    assert out.getvalue().startswith("Archived 0 conversations (0 messages) and mirrored 1 live conversations (2 new messages) in ")
    assert "Mirrored 1 live conversations (2 new messages)" in caplog.messages
    health = json.loads(Path(settings.ARCHIVER["HEALTH_FILE"]).read_text())
    assert (health["conversations_mirrored"], health["messages_mirrored"], health["messages_archived"]) == (1, 2, 0)
    run = ArchiveRun.objects.get()
    assert (run.mirrored, run.mirrored_messages, run.messages_archived) == (1, 2, 0)


def test_live_rows_of_expired_keys_are_forgotten(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"))
    run_archive(Options.from_settings())
    LiveThread.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    mirrored_redis.delete(KEY)  # it expired: what it held is in the archive

    run_archive(Options.from_settings())

    assert not LiveThread.objects.exists() and len(rows()) == 1


# --- the TTL buffer, derived from the schedule and the runs; a lower one is refused ---


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_a_ttl_buffer_shorter_than_a_run_interval_is_refused_in_one_line(mirrored_redis, settings, how):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"), age_hours=30)
    args = ["--ttl-buffer-minutes", "30"] if how == "flag" else []
    if how == "setting":
        settings.ARCHIVER = {**settings.ARCHIVER, "TTL_BUFFER_MINUTES": 30}

    with pytest.raises(CommandError) as refused:
        call_command("archive_checkpoints", *args, stdout=StringIO())

    assert str(refused.value).startswith("A TTL buffer of 30 minutes lets conversations expire between two runs: it must be at least 70.0")
    assert "\n" not in str(refused.value)
    assert mirrored_redis.exists(KEY) and not ConversationHistory.objects.exists() and not ArchiveRun.objects.exists()


def test_a_ttl_buffer_of_at_least_the_derived_one_is_taken(mirrored_redis, settings):
    settings.ARCHIVER = {**settings.ARCHIVER, "SCHEDULE_MINUTES": 15, "MIRROR_LIVE": False}
    mirrored_redis.set(KEY, plain_value([lc("human", "hola", "h1")], ts=hours_ago(1)), ex=40 * 60)

    call_command("archive_checkpoints", "--ttl-buffer-minutes", "25", stdout=StringIO())  # 15 + 0 + 10
    assert mirrored_redis.exists(KEY)
    call_command("archive_checkpoints", "--ttl-buffer-minutes", "45", stdout=StringIO())
    assert not mirrored_redis.exists(KEY) and len(rows()) == 1


# --- the support view ---


def test_the_admin_shows_live_and_archived_conversations(mirrored_redis):
    bot_writes(mirrored_redis, lc("human", "hola", "h1"))
    mirrored_redis.set("langgraph:checkpoint:wa-old:1", plain_value([lc("human", "antes", "h0")], ts=hours_ago(30)))
    run_archive(Options.from_settings())
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "x"))

    listing = client.get(reverse("admin:conversations_archivedconversation_changelist") + "?state=live")
    transcript = client.get(reverse("admin:conversations_conversationhistory_transcript", args=["wa-live"]))
    archived = client.get(reverse("admin:conversations_conversationhistory_transcript", args=["wa-old"]))

    assert [c.conversation_id for c in listing.context["cl"].result_list] == ["wa-live"]
    assert "live: still in Redis, complete up to the archiver" in transcript.content.decode()
    assert '<td id="state">archived</td>' in archived.content.decode()


# --- real bots, the archiver running between their turns ---


def identity(message: dict[str, Any]) -> str:
    """A message of a view: its id, or for one LangGraph shows without a stable id, its role and text."""
    return message["id"] if message["stable_id"] else f"{message['type']}:{message['content']}"


def ordered_union(views: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every message any view showed, once, in order of first appearance: a message new in a
    view goes right after the one before it there; at the head, before the first one already
    known; in a view that shares nothing with the earlier ones, at the end. In the bot's state:
    as the last view says."""
    union: list[str] = []
    last: dict[str, dict[str, Any]] = {}
    for view in views:
        keys = [identity(m) for m in view]
        known = [k for k in keys if k in last]
        previous = None
        for key, m in zip(keys, view):
            if key not in last:
                if previous is not None:
                    union.insert(union.index(previous) + 1, key)
                elif known:
                    union.insert(union.index(known[0]), key)
                else:
                    union.append(key)
            last[key] = m
            previous = key
    final = {identity(m) for m in views[-1]}
    return [
        {"type": last[k]["type"], "content": last[k]["content"], "in_state": k in final and last[k]["in_state"]}
        for k in union
    ]


def shown(row: ConversationHistory) -> dict[str, Any]:
    return {
        "type": row.role,
        "content": row.content_blocks if row.content_blocks is not None else row.content,
        "in_state": row.removed_at is None,
    }


REAL_BOTS = [
    *[("0.5", saver, scenario) for saver in ("redis", "shallow", "async_shallow") for scenario in ("summarize", "trim", "react")],
    # The oldest versions users run, where their layouts differ (tests/test_agents.py).
    ("0.1.3", "redis", "summarize"),
    ("0.1.3", "shallow", "trim"),
    ("0.2.1", "async_shallow", "summarize"),
]


@pytest.mark.stack
@pytest.mark.parametrize("version, saver, scenario", REAL_BOTS)
def test_a_real_bot_mirrored_between_its_turns_then_archived(stack, saver_python, tmp_path, monkeypatch, version, saver, scenario):
    """After every turn a run copies the conversation: the archive then holds every message
    LangGraph showed at any of those moments, once, in order; the final run archives it and
    adds nothing twice. A shallow saver forgets what it trimmed at the next turn: only the
    mirror has it. Each run after the first reads only the checkpoints written since the
    previous one (no margin here: the bot's turns are a second apart)."""
    from conversations import live
    from conversations.checkpoints import documents

    monkeypatch.setattr(live, "READ_MARGIN", timedelta(0))
    real_since = documents._since
    skipped: list[int] = []
    monkeypatch.setattr(documents, "_since", lambda timed, since: skipped.append(len(timed) - len(kept := real_since(timed, since))) or kept)
    conversation_id = f"conv-live-{saver}-{scenario}"
    views: list[list[dict[str, Any]]] = []
    with subprocess.Popen(
        [saver_python(version), str(ROOT / "harness" / "agents.py"), "--redis-url", stack_url(stack), "--saver", saver,
         "--prefix", f"live-{saver}", "--scenarios", scenario, "--turns", "6", "--step", "--out", str(tmp_path / "e.json")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ) as bot:
        assert bot.stdout is not None and bot.stdin is not None and bot.stderr is not None
        for line in bot.stdout:
            if not line.startswith("STEP "):
                continue
            views.append(json.loads(line[5:]))
            report = run_archive(Options.from_settings())
            assert (report.errors, report.archived, report.mirrored) == (0, 0, 1), report.error_messages
            assert [shown(r) for r in rows(conversation_id)] == ordered_union(views), f"after turn {len(views)}"
            bot.stdin.write("\n")
            bot.stdin.flush()
        assert bot.wait(timeout=300) == 0, bot.stderr.read()[-3000:]
    assert len(views) >= 4
    if saver == "redis":  # a shallow saver keeps no older checkpoint to skip
        assert sum(skipped) > len(views), skipped

    unchanged = run_archive(Options.from_settings())
    final = run_archive(Options.from_settings(now=timezone.now() + timedelta(hours=48)))

    assert (unchanged.mirrored, unchanged.archived) == (0, 0)
    assert (final.errors, final.archived, final.messages) == (0, 1, 0), final.error_messages
    stored = rows(conversation_id)
    assert [shown(r) for r in stored] == ordered_union(views)
    assert [r.position for r in stored] == list(range(len(stored)))
    assert not LiveThread.objects.exists()
    assert not [k for k in stack.scan_iter(count=1000) if f"live-{saver}".encode() in k]
    if scenario != "react":  # the bot dropped messages from its state: the archive kept them, marked
        assert any(r.removed_at is not None for r in stored)
